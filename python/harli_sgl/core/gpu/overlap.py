"""SGLang's overlap scheduler and serial slots: drain before the launch when a slot may run.

On GPU SGLang runs ``event_loop_overlap``: it launches batch N+1 and only then
processes batch N's results. Harli runs a serial slot from the results hook
(``process_batch_result``), so under that loop a "serial" slot would run on the
device beside batch N+1, and N+1's sampling would wait for it: neither serial
nor accounted for.

SGLang decides per batch whether to drain first:
``Scheduler.is_disable_overlap_for_batch``; when it answers True, N's results
are processed *before* N+1 is launched, with the forward stream idle. Harli's
hook answers True exactly when a serial slot may follow this iteration
(:func:`drain_before_launch`), so every serial slot and top-up runs where the
overlap loop leaves the GPU idle, and overlap stays on whenever no job has work
(serving alone keeps SGLang's full speed). Turning overlap off for the whole
run (``--disable-overlap-schedule``) was the alternative; it costs serving the
overlap even with no job, and SGLang picks its loop once at start, so it cannot
follow jobs coming and going.

Cost, UNMEASURED (no GPU has been lent): while a job has work, each iteration
loses the overlap of its CPU-side result processing and next-batch preparation
with the previous forward (on the order of a millisecond per iteration in
SGLang's own reports of what overlap saves); co-run pieces are unaffected.
"""

from __future__ import annotations


def drain_before_launch(overlap_loop: bool, worker_ready: bool, has_work: bool,
                        free_run: bool, profiling: bool, gpu: bool = True) -> bool:
    """Whether to process the last batch's results (and run its slot) before the next launch.

    Args:
        overlap_loop: SGLang runs its overlap loop (no ``--disable-overlap-schedule``);
            the normal loop always drains.
        gpu: the forward is asynchronous (a GPU). On a CPU ``run_batch`` returns with
            the forward done, so nothing runs beside a slot and the loop is left as it is.
        worker_ready / has_work: a worker is up and has a job (or profile) to train.
        free_run: the policy lets the worker run unscheduled (greedy): no slots.
        profiling: the start-up profile runs serial slots of its own.
    """
    if not (overlap_loop and gpu) or not worker_ready:
        return False
    if profiling:
        return True
    return has_work and not free_run
