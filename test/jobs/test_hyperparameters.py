"""Hyperparameters and LoRA settings: "auto" resolution, both OpenAI forms, bounds named by field."""

from __future__ import annotations

import dataclasses
import math

import pytest

from harli_sgl.jobs.hyperparameters import (AUTO_BETA, BASE_LEARNING_RATE, LLAMA_PROJECTIONS,
                                            Hyperparameters, LoraSettings, SettingError,
                                            method_object)

ALLOWED = LLAMA_PROJECTIONS


def make(**request):
    return Hyperparameters.from_request(max_lora_rank=16, allowed_target_modules=ALLOWED, **request)


def test_defaults_resolve_auto():
    hp = make()
    assert (hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier) == (3, 4, 1.0)
    assert hp.learning_rate == pytest.approx(BASE_LEARNING_RATE) == pytest.approx(1e-3)
    assert hp.lora == LoraSettings(r=8, alpha=16.0, target_modules=LLAMA_PROJECTIONS, dropout=0.0)
    assert make(hyperparameters={"n_epochs": "auto", "batch_size": "auto",
                                 "learning_rate_multiplier": "auto"}) == hp


def test_explicit_values_and_learning_rate():
    hp = make(hyperparameters={"n_epochs": 5, "batch_size": 2, "learning_rate_multiplier": 0.5})
    assert hp.to_openai() == {"n_epochs": 5, "batch_size": 2, "learning_rate_multiplier": 0.5}
    assert hp.learning_rate == pytest.approx(5e-4)


def test_method_form_is_equivalent():
    legacy = make(hyperparameters={"n_epochs": 7, "batch_size": 16})
    method = make(method={"type": "supervised",
                          "supervised": {"hyperparameters": {"n_epochs": 7, "batch_size": 16}}})
    assert legacy == method


def test_both_forms_must_agree():
    same = {"n_epochs": 2}
    assert make(hyperparameters=same, method={"type": "supervised",
                                              "supervised": {"hyperparameters": same}}).n_epochs == 2
    with pytest.raises(SettingError) as err:
        make(hyperparameters={"n_epochs": 2},
             method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}})
    assert err.value.field == "hyperparameters"


def test_dpo_settings_default_like_openai_and_round_trip_through_the_stored_job():
    hp = make(method={"type": "dpo"})
    assert (hp.method, hp.beta, hp.n_epochs, hp.batch_size) == ("dpo", AUTO_BETA, 3, 4)
    hp = make(method={"type": "dpo", "dpo": {"hyperparameters": {
        "beta": 0.25, "n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5}}})
    stored = hp.to_stored()
    assert stored == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5, "beta": 0.25}
    assert Hyperparameters.from_job({"hyperparameters": stored, "lora": hp.lora.to_dict()}) == hp
    job = {"hyperparameters": {k: v for k, v in stored.items() if k != "beta"},
           "method": method_object(stored), "lora": hp.lora.to_dict()}  # as the API shows it
    assert Hyperparameters.from_job(job) == hp
    assert method_object(stored) == {"type": "dpo", "dpo": {"hyperparameters": stored}}
    assert make(method={"type": "dpo", "dpo": {"hyperparameters": {"beta": "auto"}}}).beta == 0.1
    supervised = make(hyperparameters={"n_epochs": 2})
    assert supervised.method == "supervised" and supervised.beta is None
    assert supervised.to_stored() == supervised.to_openai()
    assert method_object(supervised.to_stored())["type"] == "supervised"
    with pytest.raises(SettingError) as err:
        Hyperparameters(beta=5.0)
    assert err.value.field == "method.dpo.hyperparameters.beta"


@pytest.mark.parametrize("method, field", [
    ({"type": "reinforcement"}, "method.type"),
    ({"type": "dpo", "dpo": {"hyperparameters": {"beta": -1}}}, "method.dpo.hyperparameters.beta"),
    ({"type": "dpo", "supervised": {}}, "method.supervised"),
    ({"type": "supervised", "dpo": {}}, "method.dpo"),
    ("supervised", "method"),
    ({"type": "supervised", "supervised": {"hyperparameters": {"epochs": 2}}},
     "method.supervised.hyperparameters.epochs"),
    ({"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}},
     "method.supervised.hyperparameters.n_epochs"),
])
def test_bad_method(method, field):
    with pytest.raises(SettingError) as err:
        make(method=method)
    assert err.value.field == field
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("name, value", [
    ("n_epochs", 0), ("n_epochs", 51), ("n_epochs", 2.0), ("n_epochs", "3"), ("n_epochs", True),
    ("batch_size", 0), ("batch_size", 257), ("batch_size", -1), ("batch_size", "big"),
    ("learning_rate_multiplier", 0), ("learning_rate_multiplier", -1.0),
    ("learning_rate_multiplier", 10.5), ("learning_rate_multiplier", math.nan),
    ("learning_rate_multiplier", math.inf), ("learning_rate_multiplier", False),
    ("learning_rate_multiplier", "1e-3"),
])
def test_out_of_bounds_hyperparameters_name_the_field(name, value):
    with pytest.raises(SettingError) as err:
        make(hyperparameters={name: value})
    assert err.value.field == f"hyperparameters.{name}"
    assert name in str(err.value)


@pytest.mark.parametrize("name, value", [("n_epochs", 1), ("n_epochs", 50), ("batch_size", 1),
                                         ("batch_size", 256), ("learning_rate_multiplier", 10),
                                         ("learning_rate_multiplier", 1e-6)])
def test_bounds_are_inclusive_where_documented(name, value):
    assert getattr(make(hyperparameters={name: value}), name) == value


def test_unknown_hyperparameter_is_named():
    with pytest.raises(SettingError) as err:
        make(hyperparameters={"n_epoch": 3})
    assert err.value.field == "hyperparameters.n_epoch"


def test_lora_settings_from_request():
    hp = make(lora={"r": 16, "alpha": 32, "target_modules": ["q_proj", "v_proj"], "dropout": 0.1})
    assert hp.lora.to_dict() == {"r": 16, "alpha": 32.0, "target_modules": ["q_proj", "v_proj"],
                                 "dropout": 0.1}
    assert hp.lora.scaling == 2.0


@pytest.mark.parametrize("lora, field", [
    ({"r": 17}, "lora.r"), ({"r": 0}, "lora.r"), ({"r": 4.0}, "lora.r"),
    ({"alpha": 0}, "lora.alpha"), ({"alpha": "16"}, "lora.alpha"),
    ({"dropout": 1.0}, "lora.dropout"), ({"dropout": -0.1}, "lora.dropout"),
    ({"target_modules": ["lm_head"]}, "lora.target_modules"),
    ({"target_modules": []}, "lora.target_modules"),
    ({"target_modules": "q_proj"}, "lora.target_modules"),
    ({"target_modules": ["q_proj", "q_proj"]}, "lora.target_modules"),
    ({"target_modules": [1]}, "lora.target_modules"),
    ({"rank": 4}, "lora.rank"),
    ([4], "lora"),
])
def test_bad_lora_names_the_field(lora, field):
    with pytest.raises(SettingError) as err:
        make(lora=lora)
    assert err.value.field == field


@pytest.mark.parametrize("alpha", [1024.5, 1e30, 2**40])
def test_lora_alpha_has_an_upper_bound(alpha):
    with pytest.raises(SettingError) as err:
        make(lora={"alpha": alpha})
    assert err.value.field == "lora.alpha"
    assert "must be a number in (0, 1024]" in str(err.value) and repr(alpha) in str(err.value)
    assert make(lora={"alpha": 1024}).lora.alpha == 1024.0


def test_server_limits_bound_lora_and_clip_its_defaults():
    hp = Hyperparameters.from_request(max_lora_rank=4, allowed_target_modules=["q_proj", "v_proj"])
    assert hp.lora.r == 4 and hp.lora.target_modules == ("q_proj", "v_proj")
    with pytest.raises(SettingError, match="not allowed on this server"):
        Hyperparameters.from_request(lora={"target_modules": ["o_proj"]}, max_lora_rank=4,
                                     allowed_target_modules=["q_proj", "v_proj"])
    with pytest.raises(SettingError, match="between 1 and 4"):
        LoraSettings(r=5, max_rank=4)


def test_frozen_and_rebuilt_from_a_stored_job():
    hp = make(hyperparameters={"n_epochs": 2}, lora={"r": 4, "target_modules": ["q_proj"]})
    with pytest.raises(dataclasses.FrozenInstanceError):
        hp.n_epochs = 9  # type: ignore[misc]
    job = {"hyperparameters": hp.to_openai(), "lora": hp.lora.to_dict()}
    assert Hyperparameters.from_job(job) == hp


def test_direct_construction_validates_too():
    with pytest.raises(SettingError) as err:
        Hyperparameters(n_epochs=100)
    assert err.value.field == "n_epochs"
