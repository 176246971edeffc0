"""The slot coordinator: the engine-agnostic half of the HarliScheduler, one part per module.

Split the way mini-sglang splits its scheduler:

* ``coordinator.py``: :class:`SlotCoordinator` wires the parts and runs one
  iteration's turn (measure, pump, ask the policy, apply its plan);
* ``measure.py``: a launch-to-launch interval is one measured iteration, fed to
  the predictor, the policy's margin and the metrics (and the trace);
* ``speeds.py``: the measured finetune speeds (idle, top-up, co-run);
* ``channel.py``: the worker channel (drain, pump, bounded waits, serial slots);
* ``corun_control.py``: start and stop co-running, and the worker's CPU affinity;
* ``startup_profile.py``: the start-up profile and the latency profile file;
* ``status.py``: read-only status views.

Every decision (what runs, where, whether the pool is lent) is the policy's,
in :mod:`harli_sgl.core.policy`; the unified pool is behind one manager in
:mod:`harli_sgl.core.pool`.
"""

from __future__ import annotations

from harli_sgl.core.coordinator.coordinator import SlotCoordinator

__all__ = ["SlotCoordinator"]
