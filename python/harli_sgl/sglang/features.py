"""SGLang batches reduced to what the engine-agnostic core sees (:class:`IterationFeatures`)."""

from __future__ import annotations

from harli_sgl.core.iteration import IterationFeatures


def batch_features(batch) -> IterationFeatures:
    """A batch about to launch."""
    seq_lens = batch.seq_lens_cpu
    ctx = int(seq_lens.sum()) if seq_lens is not None else 0
    if not batch.forward_mode.is_extend():
        return IterationFeatures(batch.batch_size(), ctx)
    extend = int(batch.extend_num_tokens or 0)
    attention = sum(e * (p + e) for p, e in zip(batch.prefix_lens or (), batch.extend_lens or ()))
    return IterationFeatures(batch.batch_size(), ctx, extend, attention)


def next_decode(running_batch) -> IterationFeatures:
    """The decode iteration the running batch makes next (one more token each)."""
    bs = running_batch.batch_size() if running_batch is not None and not running_batch.is_empty() else 0
    ctx = int(running_batch.seq_lens_cpu.sum()) if bs and running_batch.seq_lens_cpu is not None else 0
    return IterationFeatures(bs, ctx + bs)
