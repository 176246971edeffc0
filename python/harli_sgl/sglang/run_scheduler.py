"""The scheduler-process entry SGLang is launched with (``run_scheduler_process_func``).

SGLang spawns its scheduler with ``multiprocessing`` spawn, so this must be a
top-level function. It registers Harli's classes with SGLang's ``HookRegistry``
(class REPLACE: the scheduler and the unified pool's KV pool and allocators)
and hands over to the stock ``run_scheduler_process``, whose ``load_plugins()``
applies them before anything is constructed. On a host without an accelerator
it first makes SGLang's LoRA serving pin-free (:mod:`harli_sgl.sglang.cpu_lora`).
Like the launcher, it keeps the API keys out of this process's logs
(:mod:`harli_sgl.sglang.redact`).

A SIGTERM to the whole process group is left to the main process
(:mod:`harli_sgl.sglang.shutdown`).

No SGLang code is copied or edited.
"""

from __future__ import annotations


def run_harli_scheduler_process(*args, **kwargs):
    from sglang.srt.managers import scheduler as scheduler_module
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from harli_sgl.sglang import cpu_lora, pool, redact, shutdown
    from harli_sgl.sglang.scheduler import HarliScheduler

    # A spawned process starts with the default record factory: redact the keys here too.
    server_args = kwargs.get("server_args", args[0] if args else None)
    redact.install_log_redaction(redact.secrets_of(server_args))

    shutdown.leave_sigterm_to_main("scheduler")
    if cpu_lora.needed():
        cpu_lora.apply()
    # Class REPLACE rebinds the names in every module that imported them, so SGLang's
    # own code constructs our subclasses. run_scheduler_process's load_plugins()
    # applies registered hooks before anything is built.
    HookRegistry.register("sglang.srt.managers.scheduler.Scheduler", HarliScheduler,
                          HookType.REPLACE)
    for target, cls in pool.HOOKS.items():
        HookRegistry.register(target, cls, HookType.REPLACE)
    HookRegistry.apply_hooks()  # idempotent; load_plugins() would too
    return scheduler_module.run_scheduler_process(*args, **kwargs)
