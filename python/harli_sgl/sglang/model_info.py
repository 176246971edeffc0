"""``/model_info`` shows a tenant the model's name, never where the server keeps it.

SGLang's ``/model_info`` (and the deprecated ``/get_model_info``) answers with
``model_path`` and ``tokenizer_path``: the server's filesystem paths, which a
tenant has no use for and should not learn. Both routes are replaced, before
the server starts, by ones that call SGLang's own endpoint and, for a caller
who is not the operator, put the served model name in both fields (every other
field is SGLang's). SGLang's frontend language picks its chat template from
``model_path`` and finds the embedded models' templates by served name too
(:mod:`harli_sgl.frontend`). The one client this changes: ``sglang.bench_serving``
run with a tenant's key and no ``--tokenizer`` reads the tokenizer's location
here, so a tenant passes ``--tokenizer`` (the operator's key still gets the paths).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from harli_sgl.jobs import principal as P

ROUTES = ("/model_info", "/get_model_info")
PATH_FIELDS = ("model_path", "tokenizer_path")


def for_caller(info: dict[str, Any], operator: bool) -> dict[str, Any]:
    if operator:
        return info
    name = info.get("served_model_name")
    return {k: (name if k in PATH_FIELDS else v) for k, v in info.items()}


def install(app: Any) -> None:
    """Replace SGLang's model-info routes on ``app`` by ones that hide paths from tenants."""
    from fastapi.routing import APIRoute

    for route in list(app.router.routes):
        if isinstance(route, APIRoute) and route.path in ROUTES:
            app.router.routes.remove(route)
            app.add_api_route(route.path, _narrowed(route.endpoint), methods=sorted(route.methods),
                              name=route.name, include_in_schema=route.include_in_schema)


def _narrowed(endpoint):
    async def model_info(request: Request):
        caller = P.of_scope(request) or P.UNAUTHENTICATED
        return for_caller(dict(await endpoint()), caller.operator)

    model_info.__doc__ = endpoint.__doc__
    return model_info
