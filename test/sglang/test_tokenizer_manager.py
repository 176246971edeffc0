"""The tokenizer manager's request checks on real SGLang request objects (issue 19, items 1-2)."""

from __future__ import annotations

import pytest
from sglang.srt.managers.io_struct import GenerateReqInput

from harli_sgl.sglang.tokenizer_manager import _client_lora_ids, _drop_lora_ids, lora_id_refused


def request(**fields) -> GenerateReqInput:
    obj = GenerateReqInput(sampling_params={"max_new_tokens": 1}, **fields)
    obj.normalize_batch_and_arguments()
    return obj


@pytest.mark.parametrize("fields", [
    {"text": "hi", "lora_id": "0" * 32},
    {"text": "hi", "lora_id": ""},  # empty is still an id the scheduler would look up
    {"text": ["a", "b"], "lora_id": [None, "abc"]},
    {"text": "hi", "lora_id": "abc", "lora_path": "mine"},  # beside a name it is still refused
])
def test_a_client_lora_id_is_found_and_dropped(fields):
    obj = request(**fields)
    if not obj.is_single:
        subs = [obj[i] for i in range(len(obj.text))]  # what SGLang splits off before the check
        assert any(s.lora_id is not None for s in subs)
    assert _client_lora_ids(obj)
    _drop_lora_ids(obj)
    assert obj.lora_id is None and not _client_lora_ids(obj)
    if not obj.is_single:
        assert all(s.lora_id is None for s in subs)


@pytest.mark.parametrize("fields", [
    {"text": "hi"}, {"text": "hi", "lora_path": "mine"}, {"text": ["a", "b"], "lora_id": [None, None]},
])
def test_no_lora_id_is_no_refusal(fields):
    assert not _client_lora_ids(request(**fields))


def test_the_refusal_is_a_400_naming_the_field():
    e = lora_id_refused()
    assert e.status == 400 and e.param == "lora_id"
    assert e.body()["error"]["type"] == "invalid_request_error" and "lora_id" in e.message
