"""Helpers shared by the job-store tests: a small training file and jobs in any status."""

from __future__ import annotations

from harli_sgl.jobs.store import JobStore

DATA = b'{"prompt": "2+2=", "completion": "4"}\n'
HP = {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 1.0}
LORA = {"r": 8, "alpha": 16.0, "target_modules": ["q_proj", "v_proj"], "dropout": 0.0}


def new_job(store: JobStore, file_id: str | None = None, **kw) -> dict:
    if file_id is None:
        file_id = store.create_file("train.jsonl", "fine-tune", DATA)["id"]
    args = dict(model="base", training_file=file_id, validation_file=None, suffix=None, seed=1,
                hyperparameters=HP, lora=LORA, metadata=None)
    args.update(kw)
    return store.create_job(**args)


def queued_job(store: JobStore, file_id: str | None = None) -> dict:
    return store.set_status(new_job(store, file_id)["id"], "queued")


# Shortest legal path from validating_files to each status.
PATH_TO = {
    "validating_files": [],
    "queued": ["queued"],
    "running": ["queued", "running"],
    "succeeded": ["queued", "running", "succeeded"],
    "failed": ["failed"],
    "cancelled": ["cancelled"],
}


def job_in(store: JobStore, status: str) -> dict:
    job = new_job(store)
    for step in PATH_TO[status]:
        job = store.set_status(job["id"], step)
    assert job["status"] == status
    return job
