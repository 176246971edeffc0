"""Which cores the scheduler process (decode, prefill) runs on, on a CPU host with a split.

Decode keeps its cores; the rest are the worker's share for co-running.
SGLang binds its CPU threads only where sgl_kernel's AMX path is enabled;
elsewhere torch uses every core. Pinning this process's threads and sizing
torch's pool to decode's cores makes the split real either way.

The process is *widened* onto every core when the coordinator says so
(``launch_on_every_cpu``): while nothing trains beside decode, and for a prefill
batch under ``--harli-prefill-cpus all`` (the default; prefill is compute-bound
and uses a second core; the worker's threads there are SCHED_IDLE, so this
process's threads take the core at once). Applied at a launch, only when the
wanted state changes.
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
        self.config = config  # only its core sets are read, and those never change
        self.wide = False
        if config.finetune_enabled and config.decode_cpus:
            cpu_affinity.pin_threads(config.decode_cpus)
            torch.set_num_threads(len(config.decode_cpus))
            logger.info("harli: decode on cores %s (%d threads); worker share: cores %s",
                        format_cpus(config.decode_cpus), torch.get_num_threads(),
                        format_cpus(config.worker_cpus))

    def at_launch(self, wide: bool) -> None:
        """Widen or narrow for the batch about to launch (the coordinator's
        ``launch_on_every_cpu`` decides; this only applies it, when it changes)."""
        if wide != self.wide:
            cpus = self.config.all_cpus if wide else self.config.decode_cpus
            cpu_affinity.pin_threads(cpus)
            torch.set_num_threads(len(cpus))
            self.wide = wide
