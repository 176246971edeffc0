"""A job's data as the worker trains it: its files read and tokenised, its micro-batch size.

Runs on the worker's prepare thread (never on its loop: tokenising a large file
takes seconds). A supervised job's training and validation files are chat or
prompt/completion JSONL (:mod:`harli_sgl.core.trainer.data`); a DPO job's
training and validation files are preference JSONL
(:mod:`harli_sgl.core.trainer.preference`), and a DPO pair is two sequences,
which is why the micro-batch counts pairs.
Both files were checked line by line at upload; what can still fail here (an
example with no supervised token left within ``MAX_SEQ_LEN``) raises
``DataError`` naming the line (and the file, if it is the validation file), and
fails the job.
"""

from __future__ import annotations

from typing import Any

from harli_sgl.core.trainer.data import DataError, load_examples
from harli_sgl.core.trainer.preference import load_preference_examples
from harli_sgl.jobs.hyperparameters import Hyperparameters
from harli_sgl.worker import malloc
from harli_sgl.worker.running_job import PreparedData

MAX_SEQ_LEN = 1024  # tokens per example; longer ones are truncated


def read_job_data(store: Any, tokenizer: Any, job: dict) -> PreparedData:
    """Read and tokenise ``job``'s files from ``store``."""
    hp = Hyperparameters.from_job(job)
    text = store.read_file(job["training_file"]).decode("utf-8")
    load = load_preference_examples if hp.method == "dpo" else load_examples
    examples = load(text, tokenizer, MAX_SEQ_LEN)
    del text
    valid = []
    if job.get("validation_file"):
        try:
            valid = load(store.read_file(job["validation_file"]).decode("utf-8"), tokenizer,
                         MAX_SEQ_LEN)
        except DataError as e:  # say which file: the line numbers are the validation file's
            raise DataError(f"the validation file {job['validation_file']}: {e}", e.line,
                            e.problem) from None
    malloc.trim()  # the tokenizer's transient per-token memory (see worker/malloc.py)
    return PreparedData(hp, examples, valid)


def micro_batch_size(hp: Hyperparameters, rows: int) -> int:
    """Examples per micro-batch: ``rows`` sequences, and a DPO pair is two of them."""
    per_example = 2 if hp.method == "dpo" else 1
    return max(1, min(hp.batch_size, rows // per_example))
