from __future__ import annotations

import pytest

from harli_sgl.core.pool.watermark import Watermarks


def test_reserve_counts_remaining_generation_and_the_queue_plus_a_guard():
    p = Watermarks(quantum_pages=16, guard_fraction=0.1)
    # 2 running requests with 30 and 10 tokens to go, one queued 50+20: 110 tokens, pages of 4.
    assert p.reserve_pages(1000, 4, [30, 10], [70]) == 28 + 100


def test_lend_in_quanta_within_free_cap_and_want():
    p = Watermarks(quantum_pages=16, guard_fraction=0.0, max_lent_fraction=0.5)
    assert p.to_lend(free_pages=500, reserve=100, leased=0, total_pages=1000, wanted=1000) == 400
    assert p.to_lend(free_pages=500, reserve=100, leased=450, total_pages=1000, wanted=1000) == 48
    assert p.to_lend(free_pages=500, reserve=100, leased=0, total_pages=1000, wanted=40) == 32
    assert p.to_lend(free_pages=110, reserve=100, leased=0, total_pages=1000, wanted=1000) == 0
    assert p.to_reclaim(free_pages=100, reserve=130) == 30 and p.to_reclaim(100, 50) == 0


def test_policy_validates():
    with pytest.raises(ValueError):
        Watermarks(quantum_pages=0)
