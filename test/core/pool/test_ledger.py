from __future__ import annotations

import numpy as np
import pytest

from harli_sgl.core.pool.ledger import LeaseLedger, PoolIntegrityError, pick_ranges


def test_pick_ranges_takes_the_highest_long_runs_first():
    free = np.array([1, 2, 3, 10, 11, 12, 13, 14, 20, 21, 22, 23, 24, 25])
    assert pick_ranges(free, 4, min_run=3) == [(22, 26)]
    assert pick_ranges(free, 9, min_run=3) == [(20, 26), (12, 15)]
    assert pick_ranges(free, 100, min_run=4) == [(20, 26), (10, 15)]  # [1, 4) is too short
    assert pick_ranges(free, 0, min_run=1) == []


def test_lease_lifecycle_and_latency():
    ledger = LeaseLedger(total_pages=100)
    a = ledger.add([(50, 60)])
    b = ledger.add([(80, 90), (95, 101)])
    assert ledger.leased_pages == 26
    assert [lease.lease_id for lease in ledger.newest_first()] == [b.lease_id, a.lease_id]
    ledger.begin_reclaim(b.lease_id)
    done = ledger.complete(b.lease_id)
    assert done.pages == 16 and ledger.reclaims == 1 and len(ledger.latencies_ms) == 1
    assert [lease.lease_id for lease in ledger.release_all()] == [a.lease_id]
    assert ledger.leased_pages == 0 and ledger.released_on_death == 1


def test_integrity_catches_every_broken_invariant():
    ledger = LeaseLedger(total_pages=100)
    ledger.add([(10, 20)])
    ledger.check_integrity(np.arange(20, 101))           # consistent
    with pytest.raises(PoolIntegrityError, match="both leased and free"):
        ledger.check_integrity(np.arange(15, 101))
    with pytest.raises(PoolIntegrityError, match="page 0"):
        ledger.check_integrity(np.array([0, 50]))
    with pytest.raises(PoolIntegrityError, match="twice"):
        ledger.check_integrity(np.array([50, 50]))
    with pytest.raises(PoolIntegrityError, match="overlaps"):
        ledger.add([(15, 25)])
    with pytest.raises(PoolIntegrityError, match="outside"):
        ledger.add([(0, 5)])
    with pytest.raises(PoolIntegrityError, match="outside"):
        ledger.add([(95, 102)])
