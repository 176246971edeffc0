"""Decisions: why a policy planned what it did, each with the sentence an operator reads.

A policy names every plan with a :class:`Decision`; ``/harli/status`` reports
its value (``last_decision``, ``decisions``) and
:func:`harli_sgl.core.status_view.explain` its text, so the sentence lives here
once. ``{target}`` in a text is filled with the policy's current target.
"""

from __future__ import annotations

from enum import Enum

# Before a serial decision: it was taken because co-running beside the batch would break the SLO.
CORUN_INTERFERENCE_PREFIX = "corun_interference_"
CORUN_INTERFERENCE_TEXT = "co-running beside this batch would break the SLO, so it stopped; "


class Decision(Enum):
    """A plan's reason; ``value`` is its name in the status, ``text`` the operator's sentence."""

    def __new__(cls, value: str, text: str):
        member = object.__new__(cls)
        member._value_ = value
        member.text = text
        return member

    IDLE = ("idle", 'no request is running: an idle slot trains on the whole device')
    IDLE_CORUN = ("idle_corun", 'no request is running: the worker co-runs on every core')
    IDLE_CORUN_SHARE = (
        "idle_corun_share",
        'no request is running: the worker co-runs on its share only, because every core was '
        'measured to train no faster')
    PREFILL_PENDING = (
        "prefill_pending",
        'a request waits for its prefill: training waits so its first token is not delayed')
    PREFILL_PENDING_INTERFERENCE = (
        "prefill_pending_interference",
        'a request waits for its prefill, and co-running was just measured slower than '
        'modelled: training waits')
    PREFILL_CORUN = (
        "prefill_corun",
        'a request waits for its prefill: the worker co-runs on its share only')
    PREFILL_PENDING_CORUN = (
        "prefill_pending_corun",
        'a request waits for its prefill: the worker co-runs on its share, without a serial '
        'top-up')
    PREDICTOR_COLD = (
        "predictor_cold",
        'the latency predictor has too few samples to size a slot safely')
    UNSEEN_BATCH_SIZE = (
        "unseen_batch_size",
        'this batch size has not been measured alone yet: it runs alone once to teach the '
        'predictor')
    CALIBRATE = (
        "calibrate",
        "a calibration iteration runs alone (every 25th) to keep decode's model fresh")
    NO_SLACK = (
        "no_slack",
        'no serial slot while decoding: the next iteration is predicted to use the whole target '
        '({target})')
    SLACK_BELOW_ONE_PIECE = (
        "slack_below_one_piece",
        'the slack left while decoding ({target}) is smaller than one piece of the job')
    EXPLORE = ("explore", 'a one-piece slot teaches the predictor what a slot costs')
    GRANTED = ("granted", 'serial slots run in the slack decode leaves ({target})')
    CONCURRENT = ("concurrent", 'the worker co-runs beside decode on its share')
    CONCURRENT_TOPUP_NO_GAIN = (
        "concurrent_topup_no_gain",
        'the worker co-runs beside decode on its share; serial top-ups are off because the '
        'whole device was measured to train no faster than the share')
    HYBRID = (
        "hybrid",
        'the worker co-runs beside decode on its share, plus a serial top-up in the slack '
        '({target})')
    NO_SHARE = (
        "no_share",
        'mode spatial without a device share for the worker: no partition to train on')
    PARTITION = ("partition", 'mode spatial: the worker trains on its fixed share of the device')


# Plans that keep decode alone on its own cores *to measure it*: stage 1's law is decode
# on decode's cores, and these are the iterations it learns from while a job co-runs.
MEASURES_DECODE_ALONE = frozenset({Decision.PREDICTOR_COLD, Decision.UNSEEN_BATCH_SIZE,
                                   Decision.CALIBRATE})
