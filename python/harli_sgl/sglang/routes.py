"""Harli's HTTP routes, added to SGLang's FastAPI app in the main process.

SGLang's ``app`` is a module global, so routes added before ``launch_server``
are served by the same uvicorn server and sit behind the same key middleware as
SGLang's own routes, with harli_sgl's tenant authentication in front of it
(:mod:`.tenant_auth`). Besides the files and fine-tuning API (every call acting
for the caller's tenant), this installs the admin routes (:mod:`.admin_routes`),
the model-name and adapter-ownership hooks on SGLang's OpenAI routes
(:mod:`.openai_models`) and on ``/generate`` (:mod:`.generate_route`), and
Harli's operator routes: ``POST /harli/policy`` and ``POST /harli/profile`` are
admin-optional (the admin key when one is set,
else the server's ``--api-key``; never a tenant's key), and ``/harli/status``
shows the whole server to the operator and a tenant only its own jobs, usage
and quotas.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sglang.srt.utils.auth import AuthLevel, auth_level

from harli_sgl.config import MODES, HarliConfig
from harli_sgl.core.status_view import operator_view
from harli_sgl.jobs import audit
from harli_sgl.jobs import principal as P
from harli_sgl.sglang.body_deadline import BodyDeadline


async def _scheduler_status() -> dict:
    from sglang.srt.entrypoints.http_server import get_global_state

    states = await get_global_state().tokenizer_manager.get_internal_state()
    return states[0]["harli"]


async def _scheduler_control(knobs: dict) -> bool:
    from sglang.srt.entrypoints.http_server import get_global_state
    from sglang.srt.managers.io_struct import SetInternalStateReq

    results = await get_global_state().tokenizer_manager.set_internal_state(
        SetInternalStateReq(server_args=knobs))
    return all(results)


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    from harli_sgl.jobs.errors import ApiError

    e = ApiError(status, message, param=param)
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


class AdaptersReadyGate:
    """ASGI middleware: ``/health`` answers 503 until the fleet's adapters are served.

    A router sends traffic to an instance once its health check passes, so the
    instance must pass only after HarliTokenizerManager has registered every
    finished adapter and loaded the newest (harli_sgl/sglang/tokenizer_manager.py).
    """

    PATHS = ("/health", "/health_generate")

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] in self.PATHS:
            from sglang.srt.entrypoints.http_server import get_global_state

            tm = get_global_state().tokenizer_manager
            if hasattr(tm, "harli_ready") and not tm.harli_ready():
                response = JSONResponse({"status": "loading the fleet's adapters"}, status_code=503)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _principal(request: Request) -> P.Principal:
    """The caller, as TenantAuth decided; a request it never saw acts for nobody."""
    from harli_sgl.jobs.errors import ApiError

    caller = P.of_scope(request)
    if caller is None:
        raise ApiError(401, "This request was not authenticated", code="invalid_api_key")
    return caller


def install(app: FastAPI, config: HarliConfig, served_model_name: str,
            enable_metrics: bool = False) -> None:
    from starlette.concurrency import run_in_threadpool

    from harli_sgl.jobs.errors import ApiError
    from harli_sgl.jobs.router import make_router
    from harli_sgl.jobs.stores import open_store
    from harli_sgl.sglang import generate_route, openai_models, tenant_auth, tenant_scope
    from harli_sgl.sglang.admin_routes import AdminApi

    store = open_store(config)
    if enable_metrics:
        from harli_sgl.sglang.job_metrics import JobCountsExporter

        JobCountsExporter(store, served_model_name).start()

    app.add_middleware(AdaptersReadyGate)
    app.add_middleware(BodyDeadline, max_body_bytes=config.max_file_bytes)
    tenant_auth.install(store)
    openai_models.install_hooks()
    generate_route.install_hook()
    tenant_scope.install_hooks()
    openai_models.install_models_routes(app, store)
    AdminApi(store).install(app)

    @app.get("/harli/status")
    async def harli_status(request: Request):
        """The operator: co-location state (mode, SLO, worker health, jobs, throughput, SLO
        attainment, pool, predictor) with ``training.why``; ``?debug=1`` adds the predictor's
        weights. A tenant: its own jobs, usage and quotas."""
        caller = P.of_scope(request) or P.UNAUTHENTICATED
        if not caller.operator:
            tenant = await run_in_threadpool(store.get_tenant, caller.tenant)
            jobs = await run_in_threadpool(store.job_status_counts, caller.tenant)
            return JSONResponse({"object": "harli.tenant_status", "tenant": caller.tenant,
                                 "jobs": jobs, "usage": tenant and tenant["usage"],
                                 "limits": tenant and tenant["effective_limits"]})
        status = await _scheduler_status()
        status["jobs"] = await run_in_threadpool(store.job_status_counts)
        debug = request.query_params.get("debug", "").lower() in ("1", "true", "yes")
        return JSONResponse(operator_view(status, debug=debug))

    @app.post("/harli/policy")
    @auth_level(AuthLevel.ADMIN_OPTIONAL)
    async def harli_policy(request: Request):
        """Switch the slot policy at run time: ``{"mode", "static_slot_units", "prefill_cpus"}``."""
        body = await request.json()
        knobs: dict = {}
        if "mode" in body:
            if body["mode"] not in MODES:
                return _error(400, f"mode must be one of {list(MODES)}", "mode")
            knobs["harli_mode"] = body["mode"]
        if "static_slot_units" in body:
            units = body["static_slot_units"]
            if not isinstance(units, int) or isinstance(units, bool) or units < 0:
                return _error(400, "static_slot_units must be an integer >= 0", "static_slot_units")
            knobs["harli_static_slot_units"] = units
        if "prefill_cpus" in body:
            if body["prefill_cpus"] not in ("decode", "all"):
                return _error(400, "prefill_cpus must be 'decode' or 'all'", "prefill_cpus")
            knobs["harli_prefill_cpus"] = body["prefill_cpus"]
        if not knobs or set(body) - {"mode", "static_slot_units", "prefill_cpus"}:
            return _error(400, "give mode, static_slot_units and/or prefill_cpus, nothing else")
        if not await _scheduler_control(knobs):
            return _error(400, "the scheduler refused the change (see the server log)")
        audit.record("policy.set", None, "scheduler", by="operator", **knobs)
        return JSONResponse(await _scheduler_status())

    @app.post("/harli/profile")
    @auth_level(AuthLevel.ADMIN_OPTIONAL)
    async def harli_profile(request: Request):
        """Turn the latency profile phase on or off: ``{"enabled": bool}``."""
        body = await request.json()
        if not isinstance(body.get("enabled"), bool):
            return _error(400, "enabled must be true or false", "enabled")
        await _scheduler_control({"harli_profile": int(body["enabled"])})
        audit.record("profile.set", None, "predictor", by="operator", enabled=body["enabled"])
        return JSONResponse({"profiling": body["enabled"]})

    if not config.finetune_enabled:
        # Registered before the jobs router, so it takes precedence for this one route.
        @app.post("/v1/fine_tuning/jobs")
        async def finetuning_disabled():
            e = ApiError(400, "finetuning is disabled on this server (--harli-mode off)",
                         code="finetuning_disabled")
            return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    router = make_router(
        store, served_model_names=[served_model_name], max_file_bytes=config.max_file_bytes,
        max_lora_rank=config.lora_max_rank, allowed_target_modules=list(config.lora_target_modules),
        principal_of=_principal,
    )
    # On the app itself, not through include_router: FastAPI keeps an included router as one
    # opaque entry, so SGLang's HTTP metrics found no route pattern and labelled requests with
    # their raw path, putting job and file ids on the open /metrics page.
    app.router.routes.extend(router.routes)
