"""A job's data as the worker reads it: micro-batch sizes, and a DPO job's files as pairs."""

from __future__ import annotations

import json

import pytest

from harli_sgl.core.trainer.data import DataError
from harli_sgl.core.trainer.preference import PreferenceExample
from harli_sgl.jobs.hyperparameters import Hyperparameters
from harli_sgl.jobs.store import JobStore
from harli_sgl.model.byte_model import build_tokenizer
from harli_sgl.worker.job_data import micro_batch_size, read_job_data
from store_util import HP, new_job


def hp(method: str, batch_size: int) -> Hyperparameters:
    return Hyperparameters.from_request(
        hyperparameters=None,
        method={"type": method, method: {"hyperparameters": {"batch_size": batch_size}}})


def test_a_micro_batch_holds_the_servers_rows_and_a_dpo_pair_is_two_of_them():
    assert micro_batch_size(hp("supervised", 8), rows=4) == 4
    assert micro_batch_size(hp("supervised", 2), rows=4) == 2  # never more than the batch
    assert micro_batch_size(hp("dpo", 8), rows=4) == 2  # 2 pairs = 4 sequences
    assert micro_batch_size(hp("dpo", 8), rows=1) == 1  # at least one pair


def pair(question: str, preferred: str, non_preferred: str) -> bytes:
    return json.dumps({"input": {"messages": [{"role": "user", "content": question}]},
                       "preferred_output": [{"role": "assistant", "content": preferred}],
                       "non_preferred_output": [{"role": "assistant", "content": non_preferred}]
                       }).encode() + b"\n"


def test_a_dpo_jobs_validation_file_is_read_as_preference_pairs(tmp_path):
    store = JobStore(str(tmp_path))
    try:
        train = store.create_file("p.jsonl", "fine-tune", pair("2+2?", "4", "5") * 3)["id"]
        held_out = store.create_file("h.jsonl", "fine-tune",
                                     pair("3+3?", "6", "7") + pair("1+1?", "2", "3"))["id"]
        job = new_job(store, train, validation_file=held_out,
                      hyperparameters={**HP, "beta": 0.1})
        data = read_job_data(store, build_tokenizer(), store.get_job(job["id"]))
        assert data.hp.method == "dpo" and (len(data.examples), len(data.validation)) == (3, 2)
        assert all(isinstance(p, PreferenceExample) for p in data.examples + data.validation)

        # A pair that the worker cannot train on names the validation file and its line.
        long = store.create_file("l.jsonl", "fine-tune", pair("3+3?", "6", "7") +
                                 pair("x" * 1100, "2", "3"))["id"]
        job = new_job(store, train, validation_file=long, hyperparameters={**HP, "beta": 0.1})
        with pytest.raises(DataError, match=f"^the validation file {long}: line 2: no token of "
                                            "preferred_output is left"):
            read_job_data(store, build_tokenizer(), store.get_job(job["id"]))
    finally:
        store.close()
