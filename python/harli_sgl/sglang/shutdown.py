"""A SIGTERM to the server's process group is an orderly shutdown, not a crash.

``kill -- -<pgid>``, systemd's default ``KillMode=control-group`` and this
project's test harness signal every process of the server at once. SGLang's
main process then does the right thing: it drains the requests in flight,
stops its subprocess watchdog and sends the scheduler a ``ShutdownReq``. But
its children died of the same SIGTERM first, and the watchdog, still running,
took that for a crash: it logged "scheduler_0 crashed with exit code -15" (or
"detokenizer ... -15"), went down SIGQUIT's crash path, and waited 60 s for
CUDA core dumps before exiting, without draining anything.

So the children SGLang launches through its seams (``run_scheduler_process_func``
and ``run_detokenizer_process_func`` of ``launch_server``) leave SIGTERM to the
main process: :func:`leave_sigterm_to_main` logs it and carries on, and the main
process's orderly path ends them. SIGKILL still ends them at once, and the
launcher kills the process tree when the main process exits. The finetune
worker keeps its own handler (a clean stop at the next loop turn).
"""

from __future__ import annotations

import logging
import signal

logger = logging.getLogger(__name__)


def leave_sigterm_to_main(process: str) -> None:
    def on_sigterm(signum, frame):
        logger.info("harli: SIGTERM: the main process drains requests, then stops the %s",
                    process)

    signal.signal(signal.SIGTERM, on_sigterm)


def run_harli_detokenizer_process(*args, **kwargs):
    """SGLang's detokenizer process, SIGTERM left to the main process (spawned: top-level)."""
    from sglang.srt.managers.detokenizer_manager import run_detokenizer_process

    leave_sigterm_to_main("detokenizer")
    return run_detokenizer_process(*args, **kwargs)
