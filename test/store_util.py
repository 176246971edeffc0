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


# ----------------------------------------------------------------- a workdir of today's release

def write_v2_store(work: str, db_url: str | None = None, files_dir: str | None = None,
                   adapter: str | None = None,
                   statuses: tuple[str, ...] = ("queued", "running", "succeeded")) -> dict[str, str]:
    """A store as the release before tenants wrote it (schema version 2), holding a file and
    jobs in ``statuses`` (the succeeded one's model: ``adapter``), each with an event, and a
    checkpoint of the running one; the ids made. The schema is built by the frozen steps
    of versions 1 and 2, which are never edited once released."""
    import json
    import os

    from harli_sgl.jobs import ids
    from harli_sgl.jobs.db import open_database
    from harli_sgl.jobs.schema import MIGRATIONS, statements
    from harli_sgl.jobs.store import DB_NAME

    files_dir = files_dir or os.path.join(work, "files")
    os.makedirs(files_dir, exist_ok=True)
    made = {"file": ids.new_id(ids.FILE)}
    with open(os.path.join(files_dir, made["file"] + ".jsonl"), "wb") as f:
        f.write(DATA)
    db = open_database(db_url, os.path.join(work, DB_NAME))
    try:
        with db.migration() as tx:
            for step in MIGRATIONS[:2]:
                for statement in statements(step):
                    tx.execute(db.translate(statement))
            db.set_schema_version(tx, 2)
            tx.execute("INSERT INTO files (id, filename, purpose, bytes, created_at) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (made["file"], "train.jsonl", "fine-tune", len(DATA), 1_700_000_000))
            for n, (status, extra) in enumerate((
                    ("queued", {}),
                    ("running", {"attempts": 1, "started_at": 1_700_000_100, "step": 4,
                                 "total_steps": 10, "trained_tokens": 400,
                                 "lease_owner": "local", "lease_expires_at": 1.0}),
                    ("succeeded", {"attempts": 1, "started_at": 1_700_000_100,
                                   "finished_at": 1_700_000_200, "trained_tokens": 1000,
                                   "succeeded_seq": 1}))):
                if status not in statuses:
                    continue
                made[status] = ids.new_id(ids.JOB)
                if status == "succeeded":
                    extra["fine_tuned_model"] = made["adapter"] = (
                        adapter or ids.adapter_dir_name(made[status], "old"))
                row = {"id": made[status], "model": "base", "training_file": made["file"],
                       "seed": 7, "suffix": "old", "hyperparameters": json.dumps(HP),
                       "lora": json.dumps(LORA), "metadata": json.dumps({"team": "a"}),
                       "status": status, "created_at": 1_700_000_000 + n, **extra}
                tx.execute(f"INSERT INTO jobs ({', '.join(row)}) "
                           f"VALUES ({', '.join('?' for _ in row)})", tuple(row.values()))
                tx.execute("INSERT INTO events (id, job_id, created_at, level, message, data, type) "
                           "VALUES (?, ?, ?, 'info', ?, ?, 'message')",
                           (ids.new_id(ids.EVENT), made[status], 1_700_000_000, f"it is {status}",
                            json.dumps({"status": status})))
            if "running" in made:
                made["checkpoint"] = ids.new_id(ids.CHECKPOINT)
                tx.execute("INSERT INTO checkpoints (id, job_id, step, path, metrics, created_at) "
                           "VALUES (?, ?, 4, '/ckpt/4', ?, 1700000150)",
                           (made["checkpoint"], made["running"],
                            json.dumps({"step": 4, "train_loss": 1.5})))
            tx.execute("INSERT INTO instances (id, url, model, harvest, room, heartbeat_at) "
                       "VALUES ('a', 'http://a', 'base', 1.0, 1, 1.0)")
    finally:
        db.close()
    return made


def make_random_adapter(path: str) -> None:
    """A PEFT adapter for the default model with random (not zero) weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from harli_sgl.model import byte_model

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(byte_model.ensure())
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    peft.save_pretrained(path)
