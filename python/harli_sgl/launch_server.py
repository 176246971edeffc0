"""``python -m harli_sgl.launch_server``: stock SGLang with Harli's scheduler and worker.

Takes every SGLang server flag unchanged plus Harli's own (``--harli-*``,
``--tpot-slo-ms``; see :mod:`harli_sgl.config`). Harli's flags are parsed apart
and travel to the scheduler process as one frozen :class:`HarliConfig` riding
on ``server_args._harli`` (ServerArgs pickles its non-field attributes across
spawn). Without ``--model-path`` the embedded default model (SmolLM2-135M-Instruct,
converted once from the installed package's GGUF) is served.
On a host with no NVIDIA driver the CPU recipe is applied, and logged; on a GPU
host the GPU recipe checks the driver, picks a dtype the worker can train in and
starts CUDA MPS when allowed (``platform/gpu_recipe.py``, untested on a GPU).

Keep this module's import-time work small: SGLang's and Harli's spawned
children re-import the main module.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import socket
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
    else:
        from harli_sgl.platform import gpu_recipe

        rest = gpu_recipe.apply(rest, harli)
    given = cpu_recipe.given_flags(rest)
    if "model_path" not in given:
        from harli_sgl.model import smollm2

        path = smollm2.ensure()
        logger.info("harli: no --model-path given; serving the embedded default model "
                    "(%s) at %s", smollm2.SERVED_NAME, path)
        rest += ["--model-path", path]
        if "served_model_name" not in given:
            rest += ["--served-model-name", smollm2.SERVED_NAME]
    rest = with_lora_serving(rest, harli, gpu)

    from sglang.srt.server_args import prepare_server_args

    server_args = prepare_server_args(rest)
    if (getattr(server_args, "tokenizer_worker_num", 1) or 1) > 1:
        # SGLang checks keys only with one tokenizer worker, and so does harli_sgl's
        # tenant authentication, which hooks that check: more would serve every tenant
        # to everyone.
        raise SystemExit("harli_sgl needs --tokenizer-worker-num 1 (tenants are authenticated "
                         "in the single tokenizer process)")
    harli = harli.resolved("cuda" if gpu else "cpu")
    if harli.instance_id is None:
        # A SQLite store belongs to this instance alone: a fixed owner lets a restart on
        # another port resume its jobs at once. In a fleet, host:port is unique and readable.
        harli = dataclasses.replace(harli, instance_id="local" if harli.db is None else
                                    f"{socket.gethostname()}:{server_args.port}")
    os.makedirs(harli.workdir, exist_ok=True)
    os.makedirs(harli.shared_dir, exist_ok=True)
    server_args._harli = harli
    return server_args, harli


def with_lora_serving(argv: list[str], harli: harli_config.HarliConfig, gpu: bool) -> list[str]:
    """Reserve SGLang LoRA capacity so finished adapters can be hot-loaded.

    SGLang sizes its LoRA pool at start-up and can only hot-load adapters whose
    rank and target modules fit it, so the pool is reserved to exactly what a
    finetune job may ask for (``--harli-lora-max-rank``/``-target-modules``).
    Flags the operator gave win.
    """
    from harli_sgl.platform import cpu_recipe

    defaults: list[tuple[str, cpu_recipe.FlagValue]] = [
        ("--enable-lora", None),
        ("--max-lora-rank", str(harli.lora_max_rank)),
        ("--lora-target-modules", tuple(harli.lora_target_modules)),
    ]
    if not gpu:
        defaults.append(("--lora-backend", "torch_native"))  # the other backends need a GPU
    out, added = cpu_recipe.with_defaults(argv, tuple(defaults))
    if added:
        logger.info("harli: LoRA serving for finished adapters: %s", " ".join(added))
    return out


def startup_profiler(server_args, harli: harli_config.HarliConfig):
    from transformers import AutoConfig

    from harli_sgl.core.predictor.startup_profile import StartupProfiler
    from harli_sgl.sglang.worker_start import local_url

    vocab = AutoConfig.from_pretrained(server_args.model_path).vocab_size
    return StartupProfiler(local_url(server_args.host, server_args.port), server_args.api_key, harli,
                           max_batch=min(server_args.max_running_requests or 16, 16), vocab=vocab,
                           admin_api_key=getattr(server_args, "admin_api_key", None))


def tokenizer_manager_factory(harli):
    """SGLang's ``init_tokenizer_manager`` building a HarliTokenizerManager that serves the
    fleet's adapters (see harli_sgl/sglang/tokenizer_manager.py)."""
    from sglang.srt.entrypoints.engine import init_tokenizer_manager

    from harli_sgl.jobs.adapter_catalog import AdapterCatalog
    from harli_sgl.jobs.stores import artifacts_of, open_store
    from harli_sgl.sglang.tokenizer_manager import HarliTokenizerManager

    HarliTokenizerManager.harli_catalog = AdapterCatalog(open_store(harli), artifacts_of(harli))
    return functools.partial(init_tokenizer_manager, TokenizerManagerClass=HarliTokenizerManager)


def refuse_tenants_without_server_keys(harli: harli_config.HarliConfig) -> None:
    """Tenants' keys in the store and neither --api-key nor --admin-api-key: nothing would
    guard SGLang's admin routes and harli_sgl's own calls could not authenticate."""
    from harli_sgl.jobs.stores import open_store

    store = open_store(harli)
    try:
        keyed = store.has_live_keys()
    finally:
        store.close()
    if keyed:
        raise SystemExit("the job store holds tenants' API keys: start the server with "
                         "--admin-api-key (and/or --api-key), or revoke them")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S")
    from sglang.srt.plugins import load_plugins

    load_plugins()
    server_args, harli = prepare(sys.argv[1:] if argv is None else argv)
    from harli_sgl.sglang import redact

    # Before SGLang logs its server_args: neither key may reach a log line or /server_info.
    secrets = redact.secrets_of(server_args)
    redact.install_log_redaction(secrets)
    if not secrets:
        refuse_tenants_without_server_keys(harli)
    logger.info("harli: mode=%s tpot_slo_ms=%.1f workdir=%s", harli.mode, harli.tpot_slo_ms, harli.workdir)

    from sglang.srt.entrypoints.http_server import app, launch_server
    from sglang.srt.utils import kill_process_tree

    from harli_sgl.sglang import model_info, routes
    from harli_sgl.sglang.run_scheduler import run_harli_scheduler_process
    from harli_sgl.sglang.shutdown import run_harli_detokenizer_process

    routes.install(app, harli, served_model_name=server_args.served_model_name
                   or server_args.model_path, enable_metrics=server_args.enable_metrics)
    redact.install_server_info_redaction(app, secrets)
    model_info.install(app)
    try:
        launch_server(server_args, run_scheduler_process_func=run_harli_scheduler_process,
                      run_detokenizer_process_func=run_harli_detokenizer_process,
                      init_tokenizer_manager_func=tokenizer_manager_factory(harli),
                      launch_callback=startup_profiler(server_args, harli).start)
    finally:
        kill_process_tree(os.getpid(), include_parent=False)


if __name__ == "__main__":
    main()
