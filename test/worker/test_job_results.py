"""A finished job's results file: built from its stored metrics events, owned by its tenant."""

from __future__ import annotations

import csv
import io

from harli_sgl.jobs.store import JobStore
from harli_sgl.worker.job_results import metrics_events, store_results_file
from store_util import DATA, new_job


def test_results_file_of_the_jobs_tenant_from_every_metrics_event(tmp_path, monkeypatch):
    from harli_sgl.worker import job_results

    monkeypatch.setattr(job_results, "PAGE", 2)  # several pages of events
    store = JobStore(str(tmp_path))
    try:
        train = store.create_file("t.jsonl", "fine-tune", DATA, tenant="acme")["id"]
        job = new_job(store, train, tenant="acme")["id"]
        store.add_event(job, "info", "a message, not metrics", {"step": 9})
        for step in (1, 2, 3):
            store.add_event(job, "info", f"step {step}", {
                "step": step, "train_loss": 1.0 / step, "train_mean_token_accuracy": step / 4,
                **({"valid_loss": 2.0, "valid_mean_token_accuracy": 0.5} if step == 2 else {})},
                type="metrics")
        assert [d["step"] for d in metrics_events(store, job)] == [1, 2, 3]  # oldest first

        file_id = store_results_file(store, job, "acme")
        row = store.get_file(file_id, "acme")
        assert (row["purpose"], row["filename"]) == ("fine-tune-results", "step_metrics.csv")
        assert store.get_file(file_id, "other") is None  # another tenant cannot see it
        rows = list(csv.DictReader(io.StringIO(store.read_file(file_id, "acme").decode())))
        assert [r["step"] for r in rows] == ["1", "2", "3"]
        assert rows[1] == {"step": "2", "train_loss": "0.5", "train_accuracy": "0.5",
                           "valid_loss": "2.0", "valid_mean_token_accuracy": "0.5"}
    finally:
        store.close()


def test_a_dpo_jobs_results_file_is_the_same_csv_with_its_losses(tmp_path):
    """A DPO step has no token accuracy: its accuracy cells are empty, its losses are there."""
    store = JobStore(str(tmp_path))
    try:
        train = store.create_file("t.jsonl", "fine-tune", DATA, tenant="acme")["id"]
        job = new_job(store, train, tenant="acme")["id"]
        for step in (1, 2):
            store.add_event(job, "info", f"step {step}", {
                "step": step, "train_loss": 0.5 / step, "train_reward_margin": 0.1 * step,
                "train_reward_accuracy": 0.75, "valid_loss": 0.625, "valid_reward_margin": 0.25,
                "valid_reward_accuracy": 1.0, "valid_examples": 4}, type="metrics")
        file_id = store_results_file(store, job, "acme")
        text = store.read_file(file_id, "acme").decode()
        assert text.splitlines()[0] == \
            "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
        rows = list(csv.reader(io.StringIO(text)))[1:]
        assert rows == [["1", "0.5", "", "0.625", ""], ["2", "0.25", "", "0.625", ""]]
    finally:
        store.close()
