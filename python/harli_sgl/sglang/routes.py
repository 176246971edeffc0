"""Harli's HTTP routes, added to SGLang's FastAPI app in the main process.

SGLang's ``app`` is a module global, so routes added before ``launch_server``
are served by the same uvicorn server and sit behind the same ``--api-key``
middleware as SGLang's own routes.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from harli_sgl.config import HarliConfig


async def _scheduler_status() -> dict:
    from sglang.srt.entrypoints.http_server import get_global_state

    states = await get_global_state().tokenizer_manager.get_internal_state()
    return states[0]["harli"]


def install(app: FastAPI, config: HarliConfig, served_model_name: str) -> None:
    from harli_sgl.jobs.errors import ApiError
    from harli_sgl.jobs.router import make_router
    from harli_sgl.jobs.store import JobStore

    store = JobStore(config.workdir)

    @app.get("/harli/status")
    async def harli_status():
        """Co-location state: mode, SLO, worker health, jobs, throughput, SLO attainment, pool, predictor."""
        status = await _scheduler_status()
        status["jobs"] = store.job_status_counts()
        return JSONResponse(status)

    if not config.finetune_enabled:
        # Registered before the jobs router, so it takes precedence for this one route.
        @app.post("/v1/fine_tuning/jobs")
        async def finetuning_disabled():
            e = ApiError(400, "finetuning is disabled on this server (--harli-mode off)",
                         code="finetuning_disabled")
            return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    app.include_router(make_router(
        store, served_model_names=[served_model_name], max_file_bytes=config.max_file_bytes,
        max_lora_rank=config.lora_max_rank, allowed_target_modules=list(config.lora_target_modules),
    ))

