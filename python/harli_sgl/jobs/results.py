"""A job's ``fine-tune-results`` file: its step metrics as CSV, the way OpenAI writes it.

OpenAI attaches one results file to a finished job (``result_files``), a CSV
with one row per step::

    step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy

It is built from the job's metrics events (``data`` of each ``type: metrics``
event): ``train_accuracy`` is the event's ``train_mean_token_accuracy``, and the
validation columns are empty on steps that were not evaluated. A step reported
twice (a job resumed from a checkpoint trains the steps after it again) keeps
its last report. Numbers are written with Python's shortest exact ``repr``, so
the file reads back to the very floats the events hold.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

RESULTS_PURPOSE = "fine-tune-results"
RESULTS_FILENAME = "step_metrics.csv"
# CSV column -> the metrics event field it is read from.
COLUMNS = {"step": "step", "train_loss": "train_loss",
           "train_accuracy": "train_mean_token_accuracy", "valid_loss": "valid_loss",
           "valid_mean_token_accuracy": "valid_mean_token_accuracy"}


def results_csv(metrics: Iterable[Mapping[str, Any]]) -> bytes:
    """The CSV of ``metrics`` (event data, oldest first), one row per step in step order."""
    by_step: dict[int, Mapping[str, Any]] = {}
    for data in metrics:
        if isinstance(data.get("step"), int):
            by_step[data["step"]] = data  # a later report of a step replaces the earlier
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for step in sorted(by_step):
        data = by_step[step]
        writer.writerow(_cell(data.get(field)) for field in COLUMNS.values())
    return out.getvalue().encode()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)
