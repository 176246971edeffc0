"""The worker's shares of the GPU: one green context per step, a piece's stream chosen by its share.

Under the ``mps_green`` means (``core/gpu/corun_means.py``) the worker, an
uncapped MPS client, holds one ``torch.cuda.GreenContext(num_sms=n)`` per step
of ``WorkerSpec.green_sms`` and one stream of each. A co-run piece runs on the
stream of the ``CoRunStart.num_sms`` it was given; a serial slot, a top-up and
an idle piece (``num_sms`` 0) run on the worker's plain stream, the whole
device. Changing share is choosing another stream at a piece boundary; the new
stream first waits for the last one, so pieces stay ordered. Everywhere else
(CPU, ``mps_fixed``, ``serial``) :meth:`DeviceShares.scope` does nothing.

UNTESTED: no GPU has been lent. In particular, whether a green context's SM
partition holds for an MPS client is not established here; the probe
(``benchmark/gpu_probe.py``) is where to check it first. If creating the
contexts fails, the worker logs it, runs every piece on its plain stream and
says so in its hello (``WorkerHello.green_contexts_failed``); the scheduler
then turns co-running off (``corun_means.after_worker_start``: ``serial``,
reason ``green_contexts_failed`` in ``/harli/status``) rather than model a
share the worker does not have.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)


class DeviceShares:
    def __init__(self, device: str, green_sms: tuple[int, ...]):
        self.streams: dict[int, Any] = {}
        self._last: Any = None
        self.failed = False  # green contexts were asked for and could not be made
        if device != "cuda" or not green_sms:
            return
        import torch

        try:
            self._contexts = [torch.cuda.GreenContext(num_sms=n) for n in green_sms]
            self.streams = {n: ctx.Stream() for n, ctx in zip(green_sms, self._contexts)}
        except Exception as e:  # noqa: BLE001 - any driver refusal means the same: no steps
            logger.error("harli: green contexts %s could not be made (%s); every piece runs on "
                         "the worker's plain stream", green_sms, e)
            self.streams = {}
            self.failed = True

    @contextlib.contextmanager
    def scope(self, num_sms: int) -> Iterator[None]:
        """Run the enclosed piece on the stream of ``num_sms`` (0 or unknown: the plain one)."""
        stream = self.streams.get(num_sms)
        if stream is None and self._last is None:
            yield
            return
        import torch

        target = stream if stream is not None else torch.cuda.current_stream()
        if self._last is not None and self._last is not target:
            target.wait_stream(self._last)
        with torch.cuda.stream(target):
            yield
        self._last = target if stream is not None else None
        if stream is not None:
            torch.cuda.current_stream().wait_stream(stream)
