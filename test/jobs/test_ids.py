"""Ids are generated in one exact shape, and nothing else (path tricks above all) validates."""

from __future__ import annotations

import pytest

from harli_sgl.jobs import ids

PATH_TRICKS = [
    "../etc/passwd",
    "file-..%2F",
    "file-../../etc/passwd",
    "file-..",
    "..",
    ".",
    "",
    "/etc/passwd",
    "file-0123456789abcdef01234567/../x",
    "file-0123456789abcdef01234567/",
    "file-0123456789abcdef0123456.",
    "file-0123456789abcdef01234567\n",
    "file-0123456789abcdef01234567\x00",
    "file-0123456789ABCDEF01234567",   # upper case is not what we generate
    "file-0123456789abcdef0123456",    # one digit short
    "file-0123456789abcdef012345678",  # one digit long
    "file-0123456789abcdef0123456\u0661",  # an Arabic-Indic digit
    " file-0123456789abcdef01234567",
    "FILE-0123456789abcdef01234567",
]


@pytest.mark.parametrize("prefix", ids.PREFIXES)
def test_new_ids_have_the_prefix_and_validate(prefix):
    made = {ids.new_id(prefix) for _ in range(200)}
    assert len(made) == 200
    for value in made:
        assert value.startswith(prefix + "-")
        assert len(value) == len(prefix) + 1 + ids.HEX_CHARS
        assert ids.is_valid_id(value, prefix)
        assert ids.check_id(value, prefix) == value


def test_an_id_of_one_kind_is_not_an_id_of_another():
    job_id = ids.new_id(ids.JOB)
    assert not ids.is_valid_id(job_id, ids.FILE)
    with pytest.raises(ids.InvalidId):
        ids.check_id(job_id, ids.FILE)


@pytest.mark.parametrize("value", PATH_TRICKS)
def test_anything_not_generated_is_rejected(value):
    assert not ids.is_valid_id(value, ids.FILE)
    with pytest.raises(ids.InvalidId, match="not a valid file id"):
        ids.check_id(value, ids.FILE)


@pytest.mark.parametrize("value", [None, 7, b"file-0123456789abcdef01234567", ["file-"]])
def test_non_strings_are_rejected(value):
    assert not ids.is_valid_id(value, ids.FILE)


def test_unknown_prefix_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown id prefix"):
        ids.new_id("model")


def test_fine_tuned_model_names_follow_openai_and_directories_stay_plain():
    job_id = ids.new_id(ids.JOB)
    short = job_id[len("ftjob-"):][: ids.SHORT_HEX_CHARS]
    assert ids.fine_tuned_model_name(job_id, None, "llama", "acme") == f"ft:llama:acme::{short}"
    named = ids.fine_tuned_model_name(job_id, "support_bot-2", "org/llama-3", "acme")
    assert named == f"ft:org/llama-3:acme:support_bot-2:{short}"
    assert ids.checkpoint_model_name(named, 5) == named + ":ckpt-step-5"
    # The directory holds no ':' or '/', whatever the base model is called; it is also the
    # name adapters had before tenants, and theirs keep that name.
    assert ids.adapter_dir_name(job_id) == f"ft-adapter-{short}"
    plain = ids.adapter_dir_name(job_id, "support_bot-2")
    assert plain == f"ft-support_bot-2-{short}"
    assert ":" not in plain and "/" not in plain and "." not in plain
    assert ids.checkpoint_model_name(plain, 5) == plain + "-step-5"


@pytest.mark.parametrize("suffix", ["a", "abc-DEF_123", "x" * ids.MAX_SUFFIX_CHARS])
def test_good_suffixes(suffix):
    assert ids.check_suffix(suffix) == suffix


@pytest.mark.parametrize("suffix", ["", "-lead", "_lead", "a:b", "a/b", "..", "a.b", "x" * 65, 5, "é"])
def test_bad_suffixes(suffix):
    with pytest.raises(ValueError, match="suffix"):
        ids.check_suffix(suffix)


def test_fine_tuned_model_name_needs_a_job_id():
    with pytest.raises(ids.InvalidId):
        ids.fine_tuned_model_name("../x", None, "base", "acme")
    with pytest.raises(ids.InvalidId):
        ids.adapter_dir_name("../x")


def test_a_checkpoint_model_name_parses_back_to_its_model_step_and_job():
    job = ids.new_id(ids.JOB)
    short = job[len(ids.JOB) + 1:][:ids.SHORT_HEX_CHARS]
    for model in (ids.fine_tuned_model_name(job, "sup-port", "org/base:v1", "acme"),
                  ids.fine_tuned_model_name(job, None, "base", "default"),
                  ids.adapter_dir_name(job, "old")):  # a job from before tenants
        name = ids.checkpoint_model_name(model, 25)
        assert ids.parse_checkpoint_model_name(name) == (model, 25, short)


@pytest.mark.parametrize("name", [
    None, 7, "", "base", "ft:base:acme::0123456789ab",  # an adapter, not a checkpoint
    "ft:base:acme::0123456789ab:ckpt-step-", "ft:base:acme::0123456789ab:ckpt-step--1",
    "ft:base:acme::0123456789ab:ckpt-step-1\n", "ft:base:acme::0123456789AB:ckpt-step-1",
    "ft:base:acme::short:ckpt-step-1", "ft-x-0123456789ab-step-1x",
    "ft:base:acme::0123456789ab:ckpt-step-1234567890",  # beyond any step we record
])
def test_anything_else_is_no_checkpoint_name(name):
    assert ids.parse_checkpoint_model_name(name) is None
