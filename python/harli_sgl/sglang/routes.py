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


def install(app: FastAPI, config: HarliConfig) -> None:
    @app.get("/harli/status")
    async def harli_status():
        """Co-location state: mode, SLO, worker health, jobs, throughput, SLO attainment, pool, predictor."""
        return JSONResponse(await _scheduler_status())
