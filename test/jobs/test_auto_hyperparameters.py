"""The "auto" rule: what a data set of n examples gets, and that given values are kept."""

from __future__ import annotations

import pytest

from harli_sgl.jobs.auto_hyperparameters import (auto_fields, auto_values, count_examples,
                                                 resolve)
from harli_sgl.jobs.hyperparameters import Hyperparameters


@pytest.mark.parametrize("n, epochs, batch, multiplier", [
    (1, 25, 1, 0.5),            # 100 trained examples would need 100 epochs: capped at 25
    (8, 13, 1, 0.5),            # ceil(100 / 8)
    (34, 3, 1, 0.5),            # 3 epochs already train 102 >= 100
    (999, 3, 1, 0.5),           # 0.2% < 1: batches of one
    (1000, 3, 2, 0.5),
    (8000, 3, 16, 2 ** 0.5),    # sqrt(16 / 8)
    (9000, 2, 16, 2 ** 0.5),    # 3 epochs would train 27 000 > 25 000: floor(25000 / 9000)
    (40_000, 1, 64, 2.0),       # at least one epoch; multiplier capped at 2
    (10_000_000, 1, 256, 2.0),  # batch capped at 256
])
def test_the_rule(n, epochs, batch, multiplier):
    values = auto_values(n)
    assert values["n_epochs"] == epochs and values["batch_size"] == batch
    assert values["learning_rate_multiplier"] == pytest.approx(multiplier)
    Hyperparameters(**values)  # always within the request bounds


def test_auto_fields_are_auto_in_every_form_given():
    assert auto_fields([None, None]) == {"n_epochs", "batch_size", "learning_rate_multiplier"}
    assert auto_fields([{"n_epochs": 2, "batch_size": "auto"}, None]) == {
        "batch_size", "learning_rate_multiplier"}
    # Given in one form, auto in the other: the given value wins (the forms must agree anyway).
    assert auto_fields([{"n_epochs": None}, {"n_epochs": 3}]) == {
        "batch_size", "learning_rate_multiplier"}


def test_resolve_changes_only_the_auto_fields():
    given = Hyperparameters(n_epochs=2, batch_size=4, learning_rate_multiplier=0.7)
    got = resolve(given, frozenset({"batch_size"}), 8000)
    assert (got.n_epochs, got.batch_size, got.learning_rate_multiplier) == (2, 16, 0.7)
    assert got.lora == given.lora
    assert resolve(given, frozenset(), 8000) == given


def test_count_examples_skips_blank_lines():
    assert count_examples(b'{"a": 1}\n\n  \n{"b": 2}\r\n') == 2
    assert count_examples(b'{"a": 1}') == 1
