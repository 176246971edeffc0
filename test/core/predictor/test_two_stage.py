from __future__ import annotations

import numpy as np

from harli_sgl.core.iteration import IterationFeatures, SlotWork
from harli_sgl.core.predictor.registry import make_predictor


def decode_ms(f: IterationFeatures) -> float:
    return 8.0 + 1.5 * f.batch_size + 0.004 * f.context_tokens + 0.05 * f.extend_tokens


def slot_ms(w: SlotWork) -> float:
    return 0.4 + 0.03 * w.units_fwd + 0.018 * w.units_bwd + 0.003 * w.units_head


def test_two_stages_learn_decode_and_corun_latency():
    rng = np.random.default_rng(1)
    p = make_predictor("two_stage_linear")
    assert not p.ready(1) and not p.ready(2)
    for i in range(600):
        bs = int(rng.integers(1, 17))
        f = IterationFeatures(bs, int(bs * rng.integers(50, 600)),
                              int(rng.integers(32, 512)) if i % 7 == 0 else 0)
        w = SlotWork(int(rng.integers(0, 4)) * 256, int(rng.integers(0, 3)) * 512,
                     int(rng.integers(0, 2)) * 256, 1) if i % 2 else SlotWork()
        noise = rng.normal(1.0, 0.03)
        p.observe(f, (decode_ms(f) + (slot_ms(w) if w.units else 0.0)) * noise, w)
    assert p.ready(1) and p.ready(2)
    s = p.status()
    assert s["stage1"]["mape"] < 0.10 and s["stage2"]["mape"] < 0.15
    f = IterationFeatures(8, 2000)
    w = SlotWork(512, 1024, 256, 4)
    assert abs(p.predict_decode(f) - decode_ms(f)) / decode_ms(f) < 0.1
    assert abs(p.predict_corun(f, w) - decode_ms(f) - slot_ms(w)) / (decode_ms(f) + slot_ms(w)) < 0.1


def test_state_roundtrip():
    p = make_predictor()
    for bs in range(1, 40):
        p.observe(IterationFeatures(bs, 100 * bs), 5.0 + bs, SlotWork())
    p.profiled = True
    q = make_predictor()
    q.load_state_dict(p.state_dict())
    assert q.profiled and q.predict_decode(IterationFeatures(3, 300)) == p.predict_decode(
        IterationFeatures(3, 300))
