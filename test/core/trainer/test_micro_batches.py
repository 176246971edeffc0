"""Splitting a step's examples into micro-batches by count and padded tokens."""

from __future__ import annotations

from harli_sgl.core.trainer.micro_batches import split

LENGTHS = {0: 100, 1: 1000, 2: 50, 3: 60, 4: 900, 5: 10}


def test_without_a_token_bound_it_is_groups_of_the_micro_batch_size_in_order():
    assert split(list(LENGTHS), LENGTHS.get, 4) == [[0, 1, 2, 3], [4, 5]]


def test_a_micro_batch_closes_before_its_padded_tokens_pass_the_bound():
    groups = split(list(LENGTHS), LENGTHS.get, 4, max_tokens=1024)
    assert groups == [[0], [1], [2, 3], [4], [5]]
    assert [i for g in groups for i in g] == list(LENGTHS)  # order kept, nothing lost
    for g in groups:  # rows x longest row, except a single example over the bound
        assert len(g) == 1 or len(g) * max(LENGTHS[i] for i in g) <= 1024


def test_an_example_longer_than_the_bound_is_a_micro_batch_of_its_own():
    assert split([1, 2, 5], LENGTHS.get, 4, max_tokens=500) == [[1], [2, 5]]


def test_a_dpo_pair_counts_two_rows():
    assert split([2, 3, 5], LENGTHS.get, 4, max_tokens=200, rows_per_item=2) == [[2], [3], [5]]
    assert split([2, 3, 5], LENGTHS.get, 4, max_tokens=240, rows_per_item=2) == [[2, 3], [5]]
