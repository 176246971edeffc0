"""OpenAI-compatible ``/v1/files`` and ``/v1/fine_tuning/jobs`` routes over a :class:`JobStore`.

Every route here is an :class:`~.error_route.OpenAIErrorRoute`: whatever fails
answers with OpenAI's error body (store refusals mapped to their 4xx, anything
unexpected a logged 500). Nothing a request sends can lose stored data: ids are validated
before any lookup (:mod:`.ids`), uploads are bounded and validated before they
are stored (:mod:`.upload`, :mod:`.validation`), and the store writes atomically.

Blocking work (the database, validating a 64 MiB file) runs in the thread pool so the
event loop, which also serves inference, is never stalled by it.

Job creation: check the request (:mod:`.job_request`) and that its files exist
with purpose ``fine-tune`` -> create the job (``validating_files``) -> re-check
the stored files' bytes and content -> ``queued`` and call ``on_jobs_changed``,
or ``failed`` with a precise ``error`` if a stored file turned out unusable.
Jobs a previous server left in ``validating_files`` finish that step when the
router is built.

Tenants: every route acts for the caller's tenant (``principal_of(request)``,
see :mod:`harli_sgl.jobs.principal`) and passes it to the store, which sees
only that tenant's objects; another tenant's file or job therefore answers the
same 404 as an id that never existed, and a job may only train on its own
tenant's files. A quota refusal is a 429 whose ``param`` names the limit. Each
change (upload, delete, job created, cancelled) is written to the audit log.

It stays whole above 300 lines: it is the API's one table of routes, each a few
lines from request to store call, so a reader finds every endpoint here.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from harli_sgl.jobs import audit, ids
from harli_sgl.jobs.auto_hyperparameters import count_examples
from harli_sgl.jobs.auto_hyperparameters import resolve as resolve_auto
from harli_sgl.jobs.error_route import OpenAIErrorRoute
from harli_sgl.jobs.errors import ApiError, bad_request, not_found, too_large
from harli_sgl.jobs.hyperparameters import LLAMA_PROJECTIONS
from harli_sgl.jobs.job_request import JobRequest, parse_job_request
from harli_sgl.jobs.objects import list_object
from harli_sgl.jobs.principal import UNAUTHENTICATED, Principal, of_scope
from harli_sgl.jobs.store import FileContentError, JobStore, NotFoundError
from harli_sgl.jobs.upload import read_multipart
from harli_sgl.jobs.validation import JsonlError, check_training_jsonl, validate_training_jsonl

logger = logging.getLogger(__name__)

DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024  # 64 MiB: ample for LoRA datasets, bounded in memory
DEFAULT_MAX_LORA_RANK = 16
MAX_JSON_BODY_BYTES = 1024 * 1024
FINE_TUNE = "fine-tune"
# What OpenAI lets clients upload; only fine-tune files are checked and usable for training.
UPLOAD_PURPOSES = ("fine-tune", "assistants", "batch", "vision", "user_data", "evals")
DEFAULT_PAGE, MAX_PAGE = 20, 100
DEFAULT_CHECKPOINTS_PAGE = 10  # OpenAI's default for checkpoints
DEFAULT_FILES_PAGE, MAX_FILES_PAGE = 10_000, 10_000  # OpenAI's files list bounds
ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def make_router(store: JobStore, *,
                served_model_names: Callable[[], Sequence[str]] | Sequence[str],
                max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                max_lora_rank: int = DEFAULT_MAX_LORA_RANK,
                allowed_target_modules: Sequence[str] = LLAMA_PROJECTIONS,
                on_jobs_changed: Callable[[], None] | None = None,
                principal_of: Callable[[Request], Principal] | None = None) -> APIRouter:
    """Build the files and fine-tuning routes over ``store`` (see :class:`FineTuningApi`).

    Args:
        store: where files and jobs live (shared with the finetune worker through the DB).
        served_model_names: the base models a job may fine-tune (a list, or a callable
            read on every request when the served set can change).
        max_file_bytes: upload limit; larger uploads get 413 without being read to the end.
        max_lora_rank / allowed_target_modules: the LoRA capacity the server reserved.
        on_jobs_changed: called after a job is queued or cancelled, so the worker can react
            at once instead of at its next poll. Its failures are logged, never returned.
        principal_of: who a request acts for; default: the principal the tenant-auth
            middleware set, else the default tenant (an app without tenants).
    """
    api = FineTuningApi(store, served_model_names, max_file_bytes, max_lora_rank,
                        allowed_target_modules, on_jobs_changed,
                        principal_of or (lambda request: of_scope(request) or UNAUTHENTICATED))
    # A job whose server died mid-validation would wait in validating_files forever.
    for stuck in store.jobs_with_status("validating_files"):
        api.finish_validation(stuck)
    return api.router()


class FineTuningApi:
    """The handlers of ``/v1/files`` and ``/v1/fine_tuning/jobs``, one method per route.

    Methods named like a route are FastAPI endpoints (their parameters are the
    route's); the others are the blocking steps they run in the thread pool.
    """

    def __init__(self, store: JobStore,
                 served_model_names: Callable[[], Sequence[str]] | Sequence[str],
                 max_file_bytes: int, max_lora_rank: int, allowed_target_modules: Sequence[str],
                 on_jobs_changed: Callable[[], None] | None,
                 principal_of: Callable[[Request], Principal]) -> None:
        self.store = store
        self.principal_of = principal_of
        if callable(served_model_names):
            self.models = served_model_names
        else:
            fixed = tuple(served_model_names)
            self.models = lambda: fixed
        self.max_file_bytes = max_file_bytes
        self.max_lora_rank = max_lora_rank
        self.allowed_modules = tuple(allowed_target_modules)
        self.on_jobs_changed = on_jobs_changed

    def router(self) -> APIRouter:
        r = APIRouter(route_class=OpenAIErrorRoute)
        r.add_api_route("/v1/files", self.create_file, methods=["POST"])
        r.add_api_route("/v1/files", self.list_files, methods=["GET"])
        r.add_api_route("/v1/files/{file_id}", self.retrieve_file, methods=["GET"])
        r.add_api_route("/v1/files/{file_id}/content", self.file_content, methods=["GET"])
        r.add_api_route("/v1/files/{file_id}", self.delete_file, methods=["DELETE"])
        r.add_api_route("/v1/fine_tuning/jobs", self.create_job, methods=["POST"])
        r.add_api_route("/v1/fine_tuning/jobs", self.list_jobs, methods=["GET"])
        r.add_api_route("/v1/fine_tuning/jobs/{job_id}", self.retrieve_job, methods=["GET"])
        r.add_api_route("/v1/fine_tuning/jobs/{job_id}/cancel", self.cancel_job, methods=["POST"])
        r.add_api_route("/v1/fine_tuning/jobs/{job_id}/events", self.list_events, methods=["GET"])
        r.add_api_route("/v1/fine_tuning/jobs/{job_id}/checkpoints", self.list_checkpoints,
                        methods=["GET"])
        # Last, so every route above wins: anything else under these prefixes (an id with a
        # slash, literal or %2F, which the routes' {id} cannot match; an unknown sub-route or
        # method) is an OpenAI-style 404 rather than the framework's {"detail": "Not Found"}.
        for prefix in ("/v1/files/{rest:path}", "/v1/fine_tuning/{rest:path}"):
            r.add_api_route(prefix, unknown_route, methods=ANY_METHOD, include_in_schema=False)
        return r

    def notify(self) -> None:
        if self.on_jobs_changed is None:
            return
        try:
            self.on_jobs_changed()
        except Exception:
            logger.exception("on_jobs_changed failed; the worker will see the change at its next poll")

    def tenant(self, request: Request) -> str:
        return self.principal_of(request).tenant

    # ---------------------------------------------------------------- files

    async def create_file(self, request: Request) -> dict[str, Any]:
        upload = await read_multipart(request.stream(), request.headers.get("content-type"),
                                      request.headers.get("content-length"),
                                      max_file_bytes=self.max_file_bytes)
        purpose = upload.fields.get("purpose")
        if not purpose:
            raise bad_request("Missing required parameter: 'purpose'", param="purpose")
        if purpose not in UPLOAD_PURPOSES:
            raise bad_request(f"Invalid purpose {purpose!r}; expected one of {list(UPLOAD_PURPOSES)}",
                              param="purpose")
        if not upload.data:
            raise bad_request(f"The uploaded file {upload.filename!r} is empty", param="file",
                              code="empty_file")
        return await run_in_threadpool(self.store_upload, upload.filename, purpose, upload.data,
                                       self.tenant(request))

    def store_upload(self, filename: str, purpose: str, data: bytes, tenant: str) -> dict[str, Any]:
        if purpose == FINE_TUNE:
            try:
                validate_training_jsonl(data)
            except JsonlError as exc:
                raise bad_request(f"Invalid fine-tuning file {filename!r}: {exc}", param="file",
                                  code="invalid_file_format") from None
        row = self.store.create_file(filename, purpose, data, tenant)
        audit.record("file.create", tenant, row["id"], bytes=row["bytes"], purpose=purpose)
        return row

    def list_files(self, request: Request, purpose: str | None = None, after: str | None = None,
                   limit: int | None = None, order: str = "desc") -> dict[str, Any]:
        limit = _limit(limit, DEFAULT_FILES_PAGE, MAX_FILES_PAGE)
        if order not in ("asc", "desc"):
            raise bad_request(f"order must be 'asc' or 'desc', got {order!r}", param="order")
        data = self.store.list_files(purpose, after=after, limit=limit + 1, order=order,
                                     tenant=self.tenant(request))
        return list_object(data[:limit], len(data) > limit)

    def retrieve_file(self, request: Request, file_id: str) -> dict[str, Any]:
        return self._file(file_id, self.tenant(request))

    def file_content(self, request: Request, file_id: str) -> Response:
        row = self._file(file_id, self.tenant(request))
        path = self.store.file_path(file_id)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            size = -1
        if size != row["bytes"]:
            raise server_error(f"the stored bytes of {file_id} are missing or damaged")
        return FileResponse(path, media_type="application/octet-stream", filename=row["filename"])

    def delete_file(self, request: Request, file_id: str) -> dict[str, Any]:
        tenant = self.tenant(request)
        if not self.store.delete_file(file_id, tenant):
            raise not_found("file", file_id)
        audit.record("file.delete", tenant, file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    def _file(self, file_id: str, tenant: str) -> dict[str, Any]:
        row = self.store.get_file(file_id, tenant)
        if row is None:
            raise not_found("file", file_id)
        return row

    # ----------------------------------------------------------------- jobs

    async def create_job(self, request: Request) -> dict[str, Any]:
        body = await json_body(request)
        req = parse_job_request(body, models=list(self.models()), max_lora_rank=self.max_lora_rank,
                                allowed_target_modules=self.allowed_modules)
        return await run_in_threadpool(self.create_job_blocking, req, self.tenant(request))

    def create_job_blocking(self, req: JobRequest, tenant: str) -> dict[str, Any]:
        self.check_file_ref(req.training_file, "training_file", tenant)
        if req.validation_file is not None:
            self.check_file_ref(req.validation_file, "validation_file", tenant)
        settings = req.settings
        if req.auto:  # "auto" follows the data set's size (jobs/auto_hyperparameters.py)
            try:
                n = count_examples(self.store.read_file(req.training_file, tenant))
            except (NotFoundError, FileContentError):
                n = None  # the job fails in finish_validation below, naming the file
            if n is not None:
                settings = resolve_auto(settings, req.auto, n)
        # The store re-checks the files atomically: one may be deleted since the check above.
        created = self.store.create_job(
            req.model, req.training_file, req.validation_file, req.suffix, req.seed,
            settings.to_stored(), settings.lora.to_dict(), req.metadata, tenant)
        audit.record("job.create", tenant, created["id"], training_file=req.training_file)
        job = self.finish_validation(created)
        if job["status"] == "queued":
            self.notify()
        return job

    def check_file_ref(self, file_id: str, param: str, tenant: str) -> None:
        row = self.store.get_file(file_id, tenant)
        if row is None:
            raise bad_request(f"{param} {file_id!r} does not exist; upload it with "
                              f"POST /v1/files and purpose 'fine-tune' first",
                              param=param, code=f"invalid_{param}")
        if row["purpose"] != FINE_TUNE:
            raise bad_request(f"{param} {file_id!r} was uploaded with purpose {row['purpose']!r}; "
                              f"training data needs purpose 'fine-tune'", param=param,
                              code=f"invalid_{param}")

    def stored_file_error(self, file_id: str, param: str,
                          method: str = "supervised") -> dict[str, Any] | None:
        """Why a stored file cannot be trained on by ``method``, as a job ``error``; None if it can."""
        what = param.replace("_", " ")
        try:
            check = check_training_jsonl(self.store.read_file(file_id))
        except (NotFoundError, FileContentError, JsonlError) as exc:
            return {"code": f"invalid_{param}", "param": param,
                    "message": f"The {what} {file_id} is unusable: {exc}"}
        if check.method != method:
            holds = "preference (DPO) records" if check.method == "dpo" else "supervised records"
            return {"code": f"invalid_{param}", "param": param,
                    "message": f"The {what} {file_id} holds {holds}, but the job's method is "
                               f"{method!r}; see docs/api.md for each method's format"}
        return None

    def finish_validation(self, job: dict[str, Any]) -> dict[str, Any]:
        """Move a ``validating_files`` job to ``queued``, or ``failed`` if a stored file is unusable."""
        error = self.stored_file_error(job["training_file"], "training_file",
                                       job["method"]["type"])
        if error is None and job["validation_file"] is not None:  # of the same kind
            error = self.stored_file_error(job["validation_file"], "validation_file",
                                           job["method"]["type"])
        try:
            if error is not None:
                return self.store.set_status(job["id"], "failed", error=error)
            return self.store.set_status(job["id"], "queued")
        except InvalidTransitionError:  # cancelled while its files were being checked
            return self.store.get_job(job["id"])  # type: ignore[return-value]

    def list_jobs(self, request: Request, after: str | None = None,
                  limit: int | None = None) -> dict[str, Any]:
        data, has_more = self.store.list_jobs(after, _limit(limit, DEFAULT_PAGE, MAX_PAGE),
                                              tenant=self.tenant(request))
        return list_object(data, has_more)

    def retrieve_job(self, request: Request, job_id: str) -> dict[str, Any]:
        return self._job(job_id, self.tenant(request))

    def cancel_job(self, request: Request, job_id: str) -> dict[str, Any]:
        tenant = self.tenant(request)
        self._job(job_id, tenant)
        job = self.store.request_cancel(job_id, tenant)
        audit.record("job.cancel", tenant, job_id)
        self.notify()
        return job

    def list_events(self, request: Request, job_id: str, after: str | None = None,
                    limit: int | None = None) -> dict[str, Any]:
        tenant = self.tenant(request)
        self._job(job_id, tenant)
        data, has_more = self.store.list_events(job_id, after, _limit(limit, DEFAULT_PAGE, MAX_PAGE),
                                                tenant=tenant)
        return list_object(data, has_more)

    def list_checkpoints(self, request: Request, job_id: str, after: str | None = None,
                         limit: int | None = None) -> dict[str, Any]:
        caller = self.principal_of(request)
        self._job(job_id, caller.tenant)
        data, has_more = self.store.list_checkpoints(
            job_id, after, _limit(limit, DEFAULT_CHECKPOINTS_PAGE, MAX_PAGE), tenant=caller.tenant)
        if not caller.operator:  # where the server keeps files is the operator's business
            data = [{k: v for k, v in c.items() if k != "path"} for c in data]
        return list_object(data, has_more)

    def _job(self, job_id: str, tenant: str) -> dict[str, Any]:
        job = self.store.get_job(job_id, tenant)
        if job is None:
            raise not_found("fine-tuning job", job_id)
        return job


def unknown_route(request: Request, rest: str) -> None:
    raise ApiError(404, f"No such object or route: {request.method} {request.url.path}",
                   code="not_found")


def _limit(limit: int | None, default: int, maximum: int) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise bad_request(f"limit must be between 1 and {maximum}, got {limit}", param="limit")
    return limit


async def json_body(request: Request) -> Any:
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_JSON_BODY_BYTES:
            raise too_large("The request body", MAX_JSON_BODY_BYTES)
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise bad_request("We could not parse the JSON body of your request; expected a JSON "
                          "object (check the Content-Type and that the body is valid JSON)") from None
