"""``python -m harli_sgl.launch_server``: stock SGLang with Harli's scheduler and worker.

Takes every SGLang server flag unchanged plus Harli's own (``--harli-*``,
``--tpot-slo-ms``; see :mod:`harli_sgl.config`). Harli's flags are parsed apart
and travel to the scheduler process as one frozen :class:`HarliConfig` riding
on ``server_args._harli`` (ServerArgs pickles its non-field attributes across
spawn). Without ``--model-path`` the embedded default model is built and served.
On a host with no NVIDIA driver the CPU recipe is applied, and logged; on a GPU
host no SGLang default is changed.

Keep this module's import-time work small: SGLang's and Harli's spawned
children re-import the main module.
"""

from __future__ import annotations

import logging
import os
import sys

from harli_sgl import config as harli_config

logger = logging.getLogger("harli_sgl.launch_server")


def prepare(argv: list[str]):
    """Split argv, apply host recipes and defaults; return (server_args, harli config)."""
    from harli_sgl.platform import cpu_recipe, cuda_stub

    harli, rest = harli_config.split_argv(argv)
    gpu = cuda_stub.has_nvidia_driver()
    if not gpu:
        rest = cpu_recipe.apply(rest)
    if "model_path" not in cpu_recipe.given_flags(rest):
        from harli_sgl.model import default_model

        path = default_model.ensure()
        logger.info("harli: no --model-path given; serving the embedded default model at %s", path)
        rest += ["--model-path", path]

    from sglang.srt.server_args import prepare_server_args

    server_args = prepare_server_args(rest)
    harli = harli.resolved("cuda" if gpu else "cpu")
    os.makedirs(harli.workdir, exist_ok=True)
    server_args._harli = harli
    return server_args, harli


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S")
    from sglang.srt.plugins import load_plugins

    load_plugins()
    server_args, harli = prepare(sys.argv[1:] if argv is None else argv)
    logger.info("harli: mode=%s tpot_slo_ms=%.1f workdir=%s", harli.mode, harli.tpot_slo_ms, harli.workdir)

    from sglang.srt.entrypoints.http_server import app, launch_server
    from sglang.srt.utils import kill_process_tree

    from harli_sgl.sglang import routes
    from harli_sgl.sglang.run_scheduler import run_harli_scheduler_process

    routes.install(app, harli)
    try:
        launch_server(server_args, run_scheduler_process_func=run_harli_scheduler_process)
    finally:
        kill_process_tree(os.getpid(), include_parent=False)


if __name__ == "__main__":
    main()
