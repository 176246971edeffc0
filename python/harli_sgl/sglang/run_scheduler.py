"""The scheduler-process entry SGLang is launched with (``run_scheduler_process_func``).

SGLang spawns its scheduler with ``multiprocessing`` spawn, so this must be a
top-level function. It registers Harli's classes with SGLang's ``HookRegistry``
(class REPLACE: the scheduler and the unified pool's KV pool and allocators)
and hands over to the stock ``run_scheduler_process``, whose ``load_plugins()``
applies them before anything is constructed. On a host without an accelerator
it first makes SGLang's LoRA serving pin-free (:mod:`harli_sgl.sglang.cpu_lora`).
Like the launcher, it keeps the API keys out of this process's logs
(:mod:`harli_sgl.sglang.redact`).

A SIGTERM sent to the whole process group (``kill -- -<pgid>``, systemd's
default ``KillMode``, the test harness) reached the scheduler too, which died
of it at once; the server's subprocess watchdog then logged "scheduler_0
crashed with exit code -15" and shut everything down through SIGQUIT, without
draining. SGLang's main process already has the orderly path: on SIGTERM it
drains the requests in flight, stops its watchdog and sends the scheduler a
``ShutdownReq``. So the scheduler leaves SIGTERM to it (:func:`_leave_sigterm_to_main`);
SIGKILL and the main process's own exit still end it.
No SGLang code is copied or edited.
"""

from __future__ import annotations


def _leave_sigterm_to_main() -> None:
    import logging
    import signal

    def on_sigterm(signum, frame):
        logging.getLogger(__name__).info(
            "harli: SIGTERM: the main process drains requests, then stops this scheduler")

    signal.signal(signal.SIGTERM, on_sigterm)


def run_harli_scheduler_process(*args, **kwargs):
    from sglang.srt.managers import scheduler as scheduler_module
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from harli_sgl.sglang import cpu_lora, pool, redact
    from harli_sgl.sglang.scheduler import HarliScheduler

    # A spawned process starts with the default record factory: redact the keys here too.
    server_args = kwargs.get("server_args", args[0] if args else None)
    redact.install_log_redaction(redact.secrets_of(server_args))

    _leave_sigterm_to_main()
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
