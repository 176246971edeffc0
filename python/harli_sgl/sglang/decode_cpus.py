"""Which cores the scheduler process (decode, prefill) runs on, on a CPU host with a split.

Decode keeps its cores; the rest are the worker's share for co-running.
SGLang binds its CPU threads only where sgl_kernel's AMX path is enabled;
elsewhere torch uses every core. Pinning this process's threads and sizing
torch's pool to decode's cores makes the split real either way.

The process is *widened* onto every core while no finetune job runs here (the
coordinator's ``decode_on_every_cpu``: nothing to harvest, so serving gets the
whole host), and for a prefill batch under ``--harli-prefill-cpus all``
(prefill is compute-bound and uses a second core where decode does not; the
worker's threads there are SCHED_IDLE, so this process's threads take the core
at once). Applied at a launch, only when the wanted state changes.
"""

from __future__ import annotations

import logging

import torch

from harli_sgl.config import HarliConfig
from harli_sgl.core import cpu_affinity
from harli_sgl.cpus import format_cpus

logger = logging.getLogger(__name__)


class DecodeCpus:
    def __init__(self, config: HarliConfig):
        self.wide = False
        if config.finetune_enabled and config.decode_cpus:
            cpu_affinity.pin_threads(config.decode_cpus)
            torch.set_num_threads(len(config.decode_cpus))
            logger.info("harli: decode on cores %s (%d threads); worker share: cores %s",
                        format_cpus(config.decode_cpus), torch.get_num_threads(),
                        format_cpus(config.worker_cpus))

    def at_launch(self, config: HarliConfig, no_work: bool, extend: bool) -> None:
        """Widen or narrow for the batch about to launch (``config`` is read now: the
        operator can change ``prefill_cpus`` at run time)."""
        prefill_all = config.prefill_cpus == "all" and config.decode_cpus and \
            config.finetune_enabled and extend
        wide = bool(no_work or prefill_all)
        if wide != self.wide:
            cpus = config.all_cpus if wide else config.decode_cpus
            cpu_affinity.pin_threads(cpus)
            torch.set_num_threads(len(cpus))
            self.wide = wide
