"""Every message exchanged between the HarliScheduler and the finetune worker, by direction.

All scheduler <-> worker traffic is one of the frozen dataclasses of
:mod:`.to_worker` (base class :class:`~.base.ToWorker`) or :mod:`.from_worker`
(base class :class:`~.base.FromWorker`), sent over a ZMQ queue typed with that
base (:mod:`harli_sgl.core.transport`) and routed by type through one
:class:`~harli_sgl.core.dispatch.Dispatcher` per receiving process, which
raises on a type it does not know. Only :class:`~.base.Heartbeat` travels both
ways. They are plain data (ints, floats, strings, tuples) so that the
engine-agnostic core runs on a machine without sglang, msgspec or even pyzmq.

=====================  ==================  =============================================
message                direction           meaning
=====================  ==================  =============================================
Heartbeat              both                liveness; a silent peer is declared hung
WorkerHello            worker -> sched     the worker mapped the weights and is ready
WorkerState            worker -> sched     whether it has work, and the next piece's size
SlotGrant              sched -> worker     run up to ``budget_units`` of finetune work now
SlotReport             worker -> sched     what a slot did: units, tokens, measured time
SetFreeRun             sched -> worker     greedy mode: train without waiting for grants
FreeCompute            sched -> worker     this instance's free compute, for job placement
CoRunStart             sched -> worker     train piece after piece on these cores, beside decode
CoRunStop              sched -> worker     stop co-running at the next piece boundary
CoRunStopped           worker -> sched     co-running stopped (answers CoRunStop)
LeaseGrant             sched -> worker     KV pages lent as tensor storage
ReclaimRequest         sched -> worker     give these leased pages back
ReclaimAck             worker -> sched     the pages are no longer used; safe to reuse
Shutdown               sched -> worker     exit cleanly
=====================  ==================  =============================================

Units. Finetune work is counted in *token-layers*: one token through one decoder
layer's forward pass is 1 unit; its backward pass is 2 units (backward costs about
twice the forward). A slot of ``budget_units`` therefore maps to a predictable
amount of compute whatever the layer chunking turns out to be.

Time. Every timestamp is ``time.monotonic()``: CLOCK_MONOTONIC is one clock for
all processes of a host, so the scheduler can lay the worker's pieces over its
own iterations and measure how much of each iteration ran beside training.
"""
