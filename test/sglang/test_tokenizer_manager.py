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


def test_a_damaged_adapter_is_a_503_naming_it_and_the_repair_line_names_the_path():
    from harli_sgl.sglang.tokenizer_manager import adapter_unavailable, repair_hint

    error = adapter_unavailable("ft:base:acme::0123456789ab", "adapter_model.safetensors is missing")
    assert error.status == 503 and error.code == "adapter_unavailable" and error.param == "model"
    assert error.body()["error"]["type"] == "server_error"
    assert "ft:base:acme::0123456789ab" in error.message and "safetensors is missing" in error.message
    line = repair_hint("ft:base:acme::0123456789ab", "/srv/adapters/ft-adapter-0123456789ab",
                       "its directory is missing", "ftjob-" + "0" * 24)
    assert "/srv/adapters/ft-adapter-0123456789ab" in line and "ftjob-" + "0" * 24 in line
    assert "To repair" in line and "\n" not in line
