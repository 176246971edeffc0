"""The GPU path's decisions, each a pure function of a few host facts.

Every choice the GPU path makes (how the worker gets a share of the SMs, which
share a co-run or a top-up gets, whether SGLang's overlap scheduler stays on,
which dtypes serve and train, whether the driver can run the installed torch,
when a lent page may change hands) is decided here from a small frozen
dataclass of facts, so it is unit-tested on a CPU host. What touches a device
(reading the facts on a GPU host, CUDA events) sits behind ``host.py`` and
``fence.py``. Nothing here imports sglang. See docs/architecture.md, "GPU path",
for which device-side paths have never run.
"""
