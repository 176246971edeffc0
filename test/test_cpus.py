"""Core sets: ``--harli-cpu-split`` lists and the default split."""

from __future__ import annotations

import pytest

from harli_sgl import cpus


def test_parse_and_format():
    assert cpus.parse_cpus("0,2-3, 5") == (0, 2, 3, 5)
    assert cpus.format_cpus((0, 1)) == "0,1"
    with pytest.raises(ValueError):
        cpus.parse_cpus(" , ")


def test_default_split_keeps_half_for_decode():
    assert cpus.default_split((0,)) is None
    assert cpus.default_split((0, 1)) == ((0,), (1,))
    split = cpus.default_split((0, 1, 2, 3, 4))
    assert split.decode == (0, 1, 2) and split.worker == (3, 4)
    assert split.worker_share == pytest.approx(0.4)
