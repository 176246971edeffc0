"""The fine-tune-results CSV: OpenAI's columns, one row per step, exact numbers."""

from __future__ import annotations

import csv
import io

from harli_sgl.jobs.results import results_csv


def test_one_row_per_step_in_openai_columns():
    metrics = [
        {"step": 1, "total_steps": 3, "train_loss": 2.5, "train_mean_token_accuracy": 0.25,
         "trained_tokens": 10},
        {"step": 2, "train_loss": 2.0, "train_mean_token_accuracy": 0.5, "valid_loss": 2.25,
         "valid_mean_token_accuracy": 0.375},
        {"step": 3, "train_loss": 1.0, "train_mean_token_accuracy": 1 / 3, "valid_loss": 1.1,
         "valid_mean_token_accuracy": 0.4, "full_valid_loss": 1.1},
    ]
    text = results_csv(metrics).decode()
    assert text.splitlines()[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert text.splitlines()[1] == "1,2.5,0.25,,"  # no validation at step 1: empty cells
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert float(rows[2]["train_accuracy"]) == 1 / 3  # read back exactly
    assert float(rows[1]["valid_mean_token_accuracy"]) == 0.375


def test_a_step_reported_again_after_a_resume_keeps_its_last_report_and_order_is_by_step():
    metrics = [{"step": 1, "train_loss": 3.0}, {"step": 2, "train_loss": 2.0},
               {"step": 2, "train_loss": 1.5}, {"step": 3, "train_loss": 1.0},
               {"no step": True}]
    rows = list(csv.DictReader(io.StringIO(results_csv(reversed(metrics)).decode())))
    assert [(r["step"], r["train_loss"]) for r in rows] == [("1", "3.0"), ("2", "2.0"), ("3", "1.0")]
    rows = list(csv.DictReader(io.StringIO(results_csv(metrics).decode())))
    assert [(r["step"], r["train_loss"]) for r in rows] == [("1", "3.0"), ("2", "1.5"), ("3", "1.0")]


def test_no_metrics_is_a_header_only():
    assert results_csv([]) == b"step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n"
