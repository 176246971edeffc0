"""``"auto"`` hyperparameters resolved from the size of the training file.

A hyperparameter left out, null or ``"auto"`` (in every form the request gives
it: top-level ``hyperparameters`` and the method's) is resolved when the job is
created, from ``n``, the number of training examples (non-blank lines of the
training file), and stored resolved, so the job object shows the values it
trains with:

* ``n_epochs``: 3, raised so that at least 100 examples are trained
  (``ceil(100 / n)``, at most 25) and lowered so that at most 25 000 are
  (``floor(25000 / n)``, at least 1). OpenAI's published rule of thumb.
* ``batch_size``: about 0.2% of the examples, as a power of two:
  ``2 ** floor(log2(n * 0.002))``, between 1 and 256 (1 below 1 000 examples,
  256 from 128 000).
* ``learning_rate_multiplier``: ``sqrt(batch_size / 8)`` clipped to [0.5, 2.0]
  (larger batches average out noise and take larger steps; the learning rate is
  ``1e-3 * multiplier``).

A value the request gives is never changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from harli_sgl.jobs.hyperparameters import AUTO, HYPERPARAMETER_FIELDS, Hyperparameters

TARGET_EPOCHS = 3
MIN_TRAINED_EXAMPLES, MAX_TRAINED_EXAMPLES = 100, 25_000
MIN_AUTO_EPOCHS, MAX_AUTO_EPOCHS = 1, 25
BATCH_FRACTION = 0.002
MIN_AUTO_BATCH, MAX_AUTO_BATCH = 1, 256
REFERENCE_BATCH = 8
MIN_AUTO_MULTIPLIER, MAX_AUTO_MULTIPLIER = 0.5, 2.0


def auto_values(n_examples: int) -> dict[str, Any]:
    """The rule above for a training file of ``n_examples`` examples (at least 1)."""
    n = max(1, n_examples)
    epochs = TARGET_EPOCHS
    if n * epochs < MIN_TRAINED_EXAMPLES:
        epochs = min(MAX_AUTO_EPOCHS, math.ceil(MIN_TRAINED_EXAMPLES / n))
    elif n * epochs > MAX_TRAINED_EXAMPLES:
        epochs = max(MIN_AUTO_EPOCHS, MAX_TRAINED_EXAMPLES // n)
    fraction = n * BATCH_FRACTION
    batch = 1 if fraction < 1 else 2 ** math.floor(math.log2(fraction))
    batch = min(MAX_AUTO_BATCH, max(MIN_AUTO_BATCH, batch))
    multiplier = min(MAX_AUTO_MULTIPLIER,
                     max(MIN_AUTO_MULTIPLIER, math.sqrt(batch / REFERENCE_BATCH)))
    return {"n_epochs": epochs, "batch_size": batch, "learning_rate_multiplier": multiplier}


def auto_fields(forms: Iterable[Mapping[str, Any] | None]) -> frozenset[str]:
    """The hyperparameters left to "auto" in every given form (a None form is not given)."""
    given = [f for f in forms if f is not None]
    return frozenset(name for name in HYPERPARAMETER_FIELDS
                     if all(f.get(name) in (None, AUTO) for f in given))


def resolve(settings: Hyperparameters, auto: frozenset[str], n_examples: int) -> Hyperparameters:
    """``settings`` with its ``auto`` fields set by the rule for ``n_examples``."""
    values = auto_values(n_examples)
    return replace(settings, **{name: values[name] for name in auto})


def count_examples(data: bytes) -> int:
    """Training examples in a JSONL file: its non-blank lines (the file is validated apart)."""
    return sum(1 for line in data.split(b"\n") if line.strip())
