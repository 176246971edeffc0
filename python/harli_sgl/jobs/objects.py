"""Database rows -> OpenAI API objects: the one place each object's shape is defined.

The store returns these dicts and the router serves them unchanged, so the
finetune worker and API clients see the same objects. Beyond OpenAI's fields
there are a few documented Harli extras (OpenAI's client keeps unknown fields
as attributes):

* job ``lora``: the adapter shape ``{r, alpha, target_modules, dropout}``;
* job ``progress``: ``{step, total_steps, attempts, started_at}``, where
  ``attempts`` counts entries into ``running`` (re-runs after a worker crash; a
  preemption for another tenant's fair share is not counted);
* checkpoint ``path``: where the adapter of that step lives on the server, usable
  as SGLang's ``lora_path``; shown to the operator only (the router drops it for
  a tenant, who names a checkpoint by ``fine_tuned_model_checkpoint``).

``trained_tokens`` is filled in while a job runs (OpenAI leaves it null until the
end), so clients can watch progress. A job's ``organization_id`` is its tenant.

Beyond OpenAI's objects: an API key (``harli.api_key``, never holding the key
itself, only its last characters) and a tenant (``harli.tenant``, its limits).
"""

from __future__ import annotations

import json
from typing import Any

from harli_sgl.jobs import ids
from harli_sgl.jobs.db.base import Row
from harli_sgl.jobs.hyperparameters import method_object


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def file_object(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
        "status_details": None,
    }


def job_object(row: Row) -> dict[str, Any]:
    hyperparameters = _json(row["hyperparameters"])
    return {
        "id": row["id"],
        "object": "fine_tuning.job",
        "created_at": row["created_at"],
        "error": _json(row["error"]),
        "fine_tuned_model": row["fine_tuned_model"],
        "finished_at": row["finished_at"],
        # OpenAI's legacy top-level object has no beta; a DPO job's sits under method.
        "hyperparameters": {k: v for k, v in hyperparameters.items() if k != "beta"},
        "model": row["model"],
        "organization_id": row["tenant"],
        "result_files": _json(row["result_files"]) or [],
        "seed": row["seed"],
        "status": row["status"],
        "trained_tokens": row["trained_tokens"],
        "training_file": row["training_file"],
        "validation_file": row["validation_file"],
        # OpenAI: null unless the job is running (see worker/finish_estimate.py).
        "estimated_finish": row["estimated_finish"] if row["status"] == "running" else None,
        "integrations": [],
        "metadata": _json(row["metadata"]),
        "method": method_object(hyperparameters),
        "user_provided_suffix": row["suffix"],
        "lora": _json(row["lora"]),
        "progress": {
            "step": row["step"],
            "total_steps": row["total_steps"],
            "attempts": row["attempts"],
            "started_at": row["started_at"],
        },
    }


def event_object(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "fine_tuning.job.event",
        "created_at": row["created_at"],
        "level": row["level"],
        "message": row["message"],
        "data": _json(row["data"]),
        "type": row["type"],
    }


def checkpoint_object(row: Row, fine_tuned_model: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "fine_tuning.job.checkpoint",
        "created_at": row["created_at"],
        "fine_tuned_model_checkpoint": ids.checkpoint_model_name(fine_tuned_model, row["step"]),
        "fine_tuning_job_id": row["job_id"],
        "metrics": _json(row["metrics"]),
        "step_number": row["step"],
        "path": row["path"],
    }


def key_object(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "harli.api_key",
        "tenant": row["tenant"],
        "name": row["name"],
        "hint": row["hint"],
        "created_at": row["created_at"],
        "revoked_at": row["revoked_at"],
    }


def list_object(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """OpenAI's cursor page: ``after=<last_id>`` fetches the next one."""
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
