"""The scheduler-process entry SGLang is launched with (``run_scheduler_process_func``).

SGLang spawns its scheduler with ``multiprocessing`` spawn, so this must be a
top-level function. It installs Harli's pieces in the fresh process, then hands
over to the stock ``run_scheduler_process``, which resolves ``Scheduler`` from
its module global at call time and therefore builds a HarliScheduler. On a host
without an accelerator it first makes SGLang's LoRA serving pin-free
(:mod:`harli_sgl.sglang.cpu_lora`). No SGLang code is copied or edited.
"""

from __future__ import annotations


def run_harli_scheduler_process(*args, **kwargs):
    from sglang.srt.managers import scheduler as scheduler_module

    from harli_sgl.sglang import cpu_lora
    from harli_sgl.sglang.scheduler import HarliScheduler

    if cpu_lora.needed():
        cpu_lora.apply()
    scheduler_module.Scheduler = HarliScheduler
    return scheduler_module.run_scheduler_process(*args, **kwargs)
