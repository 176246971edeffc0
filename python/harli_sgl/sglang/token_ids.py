"""Token ids a client sends must name rows of the embedding, or the request is refused.

``/generate`` and ``/v1/completions`` accept prompts as token ids. SGLang 0.5.23
checks their count against the context length but not their values, so an id
outside ``[0, vocab_size)`` reaches the embedding lookup in the scheduler, which
raises ``IndexError`` there, and the scheduler's death takes the whole server
down (measured: one ``/generate`` with id 30000 on a 263-token vocabulary killed
every process). A shared server must not be one bad request away from an
outage, so :class:`~harli_sgl.sglang.tokenizer_manager.HarliTokenizerManager`
runs :func:`check_token_ids` where SGLang validates each request; the
``ValueError`` becomes SGLang's own 400 answer and nothing reaches the scheduler.
"""

from __future__ import annotations

from collections.abc import Sequence


def check_token_ids(input_ids: Sequence[int] | None, vocab_size: int) -> None:
    """Raise ``ValueError`` naming the first id outside ``[0, vocab_size)``."""
    if not input_ids:
        return
    lo, hi = min(input_ids), max(input_ids)
    if lo >= 0 and hi < vocab_size:
        return
    bad = lo if lo < 0 else hi
    raise ValueError(f"The input contains token id {bad}, outside the model's vocabulary "
                     f"[0, {vocab_size}).")
