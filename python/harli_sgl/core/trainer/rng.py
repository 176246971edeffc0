"""A job's private random stream, so that its randomness survives interleaving and restarts.

LoRA dropout draws from torch's global generator. A worker interleaves its
training with other work in the same process, and a resumed job starts in a
fresh process, so the global generator's state at any given step is not
reproducible. Each job therefore owns its generator states (CPU, plus the
model's CUDA device if any) and swaps them in only while its pieces run; they
are saved with every checkpoint, which makes a resumed run draw the same
dropout masks as an uninterrupted one.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator

import torch


class RngStream:
    def __init__(self, seed: int, device: torch.device) -> None:
        self._cuda_index: int | None = None
        if device.type == "cuda":
            self._cuda_index = device.index if device.index is not None \
                else torch.cuda.current_device()
        self._cpu = torch.Generator().manual_seed(seed).get_state()
        self._cuda = None if self._cuda_index is None else \
            torch.Generator(f"cuda:{self._cuda_index}").manual_seed(seed).get_state()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Run the body on this stream; the caller's global RNG state is restored afterwards."""
        devices = [] if self._cuda_index is None else [self._cuda_index]
        with torch.random.fork_rng(devices=devices, device_type="cuda"):
            torch.set_rng_state(self._cpu)
            if self._cuda_index is not None:
                torch.cuda.set_rng_state(self._cuda, self._cuda_index)
            try:
                yield
            finally:
                self._cpu = torch.get_rng_state()
                if self._cuda_index is not None:
                    self._cuda = torch.cuda.get_rng_state(self._cuda_index)

    def state_dict(self) -> dict[str, str | None]:
        def encode(state: torch.Tensor | None) -> str | None:
            return None if state is None else base64.b64encode(state.numpy().tobytes()).decode()
        return {"cpu": encode(self._cpu), "cuda": encode(self._cuda)}

    def load_state_dict(self, state: dict[str, str | None]) -> None:
        def decode(blob: str) -> torch.Tensor:
            return torch.frombuffer(bytearray(base64.b64decode(blob)), dtype=torch.uint8)
        self._cpu = decode(state["cpu"])
        # A checkpoint may move between CPU and GPU; keep our own CUDA stream then.
        if self._cuda_index is not None and state.get("cuda"):
            self._cuda = decode(state["cuda"])
