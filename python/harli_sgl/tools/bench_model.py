"""Which model a benchmark serves: the embedded default (SmolLM2) or a byte-level test model.

Every benchmark takes ``--model``: ``smollm2`` (the default, what a user serves),
``byte`` or ``byte-tiny`` (random-weight byte-level Llamas, for comparing with the
figures measured before SmolLM2 was the default). A benchmark needs the model's
path (``sglang.bench_serving`` loads its tokenizer from it), the name requests
and jobs use, and the flags that serve it on both harli_sgl and stock SGLang.
"""

from __future__ import annotations

from dataclasses import dataclass

CHOICES = ("smollm2", "byte", "byte-tiny")


@dataclass(frozen=True)
class BenchModel:
    path: str
    served_name: str

    def server_flags(self) -> list[str]:
        return ["--model-path", self.path, "--served-model-name", self.served_name]


def resolve(choice: str = "smollm2") -> BenchModel:
    """Build (once, cached) and describe the chosen model."""
    if choice == "smollm2":
        from harli_sgl.model import smollm2

        return BenchModel(smollm2.ensure(), smollm2.SERVED_NAME)
    if choice in ("byte", "byte-tiny"):
        from harli_sgl.model import byte_model

        size = "small" if choice == "byte" else "tiny"
        return BenchModel(byte_model.ensure(size), byte_model.SPECS[size].name)
    raise ValueError(f"unknown model {choice!r}; choose one of {CHOICES}")
