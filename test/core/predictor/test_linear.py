from __future__ import annotations

import numpy as np

from harli_sgl.core.predictor.linear import OnlineLinearModel


def test_recovers_a_linear_law_and_scores_heldout_rows():
    rng = np.random.default_rng(0)
    w_true = np.array([12.0, 3.0, 0.5])
    m = OnlineLinearModel(3, forget=1.0)
    for _ in range(400):
        x = np.array([1.0, rng.integers(1, 16), rng.uniform(0, 20)])
        m.observe(x, float(w_true @ x) * rng.normal(1.0, 0.02))
    assert np.allclose(m.w, w_true, rtol=0.05)
    assert m.heldout >= 70  # every 5th row after warm-up is held out
    assert m.mape is not None and m.mape < 0.05


def test_heldout_rows_are_not_learned_from():
    m = OnlineLinearModel(1, forget=1.0, holdout_every=2, refit_every=1)
    for i in range(10):
        m.observe([1.0], 10.0)
    learned = m.samples
    assert learned < 10 and m.heldout == 10 - learned


def test_forgetting_follows_drift():
    m = OnlineLinearModel(1, forget=0.95, refit_every=1)
    for _ in range(200):
        m.observe([1.0], 10.0)
    for _ in range(200):
        m.observe([1.0], 20.0)
    assert abs(m.predict([1.0]) - 20.0) < 0.5


def test_prior_dominates_without_data_and_state_roundtrips():
    m = OnlineLinearModel(2, prior=np.array([5.0, 1.0]))
    assert m.predict([1.0, 2.0]) == 7.0
    m.observe([1.0, 3.0], 9.0)
    clone = OnlineLinearModel(2)
    clone.load_state_dict(m.state_dict())
    assert clone.predict([1.0, 4.0]) == m.predict([1.0, 4.0])


def correlated_slot_rows(seed: int):
    """Rows like a start-up profile's: forward, backward and head units grow together."""
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = rng.choice([256, 512, 1024, 2048, 4096, 8192]) / 1000.0
        x = np.array([1.0, n, 2.0 * n * rng.normal(1.0, 0.02), 0.01 * n * rng.normal(1.0, 0.3)])
        yield x, 5.0 + 4.0 * x[1] + 4.0 * x[2] + rng.normal(0.0, 3.0)


def test_sign_constrained_weights_stay_nonnegative_and_fit_the_data():
    unconstrained_went_negative = False
    for seed in range(20):
        free = OnlineLinearModel(4, forget=1.0, holdout_every=0)
        signed = OnlineLinearModel(4, forget=1.0, holdout_every=0, nonneg=(1, 2, 3))
        for x, y in correlated_slot_rows(seed):
            free.observe(x, y)
            signed.observe(x, y)
        free.refit()
        signed.refit()
        unconstrained_went_negative |= bool(np.any(free.w[1:] < 0))
        assert np.all(signed.w[1:] >= 0), (seed, signed.w)
        # On the data it was fitted on, it predicts nearly as well as the free fit.
        rows = list(correlated_slot_rows(seed))
        err = lambda m: np.mean([(m.predict(x) - y) ** 2 for x, y in rows])  # noqa: E731
        assert err(signed) <= err(free) * 1.2 + 1.0
    # The constraint was needed: correlated features do drive the free fit negative.
    assert unconstrained_went_negative


def test_a_saved_negative_weight_is_refitted_under_the_constraint():
    free = OnlineLinearModel(4, forget=1.0, holdout_every=0)
    for seed in range(20):
        for x, y in correlated_slot_rows(seed):
            free.observe(x, y)
    free.w = np.array([5.0, -3.0, 9.0, 1.0])  # as an unconstrained fit may have saved it
    signed = OnlineLinearModel(4, nonneg=(1, 2, 3))
    signed.load_state_dict(free.state_dict())
    assert np.all(signed.w[1:] >= 0)
