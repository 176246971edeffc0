"""parse_job_request: every refused body names its param, the allowed range and the value received.

The checks are pydantic's (jobs/hyperparameters.py, jobs/job_request.py); these
tests pin the wording the API promises on top of them, without a server.
"""

from __future__ import annotations

import pytest

from harli_sgl.jobs.errors import ApiError
from harli_sgl.jobs.hyperparameters import LLAMA_PROJECTIONS, Hyperparameters, SettingError
from harli_sgl.jobs.job_request import FIELDS, MAX_SEED, parse_job_request

MODEL = "tiny"
BASE = {"model": MODEL, "training_file": "file-abc"}
SETTING = "invalid_hyperparameters"


def parse(max_lora_rank=16, allowed=LLAMA_PROJECTIONS, **fields):
    body = {**BASE, **fields}
    return parse_job_request({k: v for k, v in body.items() if v is not ...}, models=[MODEL],
                             max_lora_rank=max_lora_rank, allowed_target_modules=allowed)


def refused(**fields) -> ApiError:
    with pytest.raises(ApiError) as err:
        parse(**fields)
    return err.value


HP = "hyperparameters"
MSH = "method.supervised.hyperparameters"

BAD_BODIES = [
    # (fields, param, code, fragments the message must hold: the rule and the value received)
    ({HP: {"n_epochs": 0}}, f"{HP}.n_epochs", SETTING, ["between 1 and 50", "got 0"]),
    ({HP: {"n_epochs": 51}}, f"{HP}.n_epochs", SETTING, ["between 1 and 50", "got 51"]),
    ({HP: {"n_epochs": True}}, f"{HP}.n_epochs", SETTING, ["an integer", "got True"]),
    ({HP: {"n_epochs": 2.0}}, f"{HP}.n_epochs", SETTING, ["an integer", "got 2.0"]),
    ({HP: {"n_epochs": "3"}}, f"{HP}.n_epochs", SETTING, ["an integer", "got '3'"]),
    ({HP: {"n_epochs": "AUTO"}}, f"{HP}.n_epochs", SETTING, ["an integer", "got 'AUTO'"]),
    ({HP: {"batch_size": 257}}, f"{HP}.batch_size", SETTING, ["between 1 and 256", "got 257"]),
    ({HP: {"learning_rate_multiplier": 0}}, f"{HP}.learning_rate_multiplier", SETTING,
     ["(0, 10]", "got 0"]),
    ({HP: {"learning_rate_multiplier": float("nan")}}, f"{HP}.learning_rate_multiplier", SETTING,
     ["(0, 10]", "got nan"]),
    ({HP: {"learning_rate_multiplier": False}}, f"{HP}.learning_rate_multiplier", SETTING,
     ["a number", "got False"]),
    ({HP: {"n_epoch": 3}}, f"{HP}.n_epoch", SETTING,
     ["unknown field", "['n_epochs', 'batch_size', 'learning_rate_multiplier']"]),
    ({HP: [3]}, HP, SETTING, ["must be an object", "got [3]"]),
    ({"method": {"type": "reinforcement"}}, "method.type", SETTING,
     ["'supervised' or 'dpo'", "got 'reinforcement'"]),
    ({"method": {"type": "supervised", "dpo": {}}}, "method.dpo", SETTING,
     ["given, but method.type is 'supervised'"]),
    ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}},
     "method.dpo.hyperparameters.beta", SETTING, ["(0, 2]", "got 0"]),
    ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": "high"}}}},
     "method.dpo.hyperparameters.beta", SETTING, ["(0, 2]", "got 'high'"]),
    ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 0}}}},
     "method.dpo.hyperparameters.n_epochs", SETTING, ["between 1 and 50", "got 0"]),
    ({"method": {"type": "dpo", "dpo": {"beta": 0.1}}}, "method.dpo.beta", SETTING,
     ["unknown field", "['hyperparameters']"]),
    ({HP: {"n_epochs": 2}, "method": {"type": "dpo"}}, HP, SETTING,
     ["under method.dpo.hyperparameters"]),
    ({"method": {"type": "dpo", "supervised": {}}}, "method.supervised", SETTING,
     ["given, but method.type is 'dpo'"]),
    ({"method": {"supervised": {"hyperparameters": {"batch_size": 0}, "beta": 1}}},
     "method.supervised.beta", SETTING, ["unknown field", "['hyperparameters']"]),
    ({"method": {"supervised": {"hyperparameters": {"n_epochs": 99}}}}, f"{MSH}.n_epochs", SETTING,
     ["between 1 and 50", "got 99"]),
    ({HP: {"n_epochs": 2}, "method": {"supervised": {"hyperparameters": {"n_epochs": 3}}}}, HP,
     SETTING, ["not both"]),
    ({"lora": {"r": 17}}, "lora.r", SETTING, ["between 1 and 16", "got 17"]),
    ({"lora": {"r": 4.0}}, "lora.r", SETTING, ["an integer", "got 4.0"]),
    ({"lora": {"alpha": 0}}, "lora.alpha", SETTING, ["(0, 1024]", "got 0"]),
    ({"lora": {"alpha": 1025}}, "lora.alpha", SETTING, ["(0, 1024]", "got 1025"]),
    ({"lora": {"alpha": float("inf")}}, "lora.alpha", SETTING, ["(0, 1024]", "got inf"]),
    ({"lora": {"dropout": 1}}, "lora.dropout", SETTING, ["[0, 1)", "got 1"]),
    ({"lora": {"target_modules": "q_proj"}}, "lora.target_modules", SETTING,
     ["non-empty list", "got 'q_proj'"]),
    ({"lora": {"target_modules": []}}, "lora.target_modules", SETTING, ["non-empty list", "got []"]),
    ({"lora": {"target_modules": ["q_proj", 1]}}, "lora.target_modules", SETTING,
     ["list of module names", "got ['q_proj', 1]"]),
    ({"lora": {"target_modules": ["v_proj", "v_proj"]}}, "lora.target_modules", SETTING,
     ["duplicates", "['v_proj', 'v_proj']"]),
    ({"lora": {"target_modules": ["lm_head"]}}, "lora.target_modules", SETTING,
     ["['lm_head'] not allowed on this server", "q_proj"]),
    ({"lora": {"rank": 4}}, "lora.rank", SETTING, ["unknown field", "'r'", "'target_modules'"]),
    ({"model": ...}, "model", None, ["Missing required parameter: 'model'"]),
    ({"model": None}, "model", None, ["Missing required parameter: 'model'"]),
    ({"training_file": ""}, "training_file", None, ["non-empty string", "got ''"]),
    ({"validation_file": 7}, "validation_file", None, ["file id string", "got 7"]),
    ({"hyperparameter": {}}, "hyperparameter", None,
     ["Unrecognized request argument supplied: hyperparameter"]),
    # A misspelt field is reported before the errors it explains (here: a missing model).
    ({"model": ..., "modle": MODEL}, "modle", None, ["Unrecognized request argument supplied: modle"]),
    ({"suffix": "a/b"}, "suffix", None, ["1-64 characters", "got 'a/b'"]),
    ({"suffix": "x" * 65}, "suffix", None, ["1-64 characters", "got 'xxx"]),
    ({"seed": -1}, "seed", None, [f"[0, {MAX_SEED}]", "got -1"]),
    ({"seed": MAX_SEED + 1}, "seed", None, [f"[0, {MAX_SEED}]", f"got {MAX_SEED + 1}"]),
    ({"seed": True}, "seed", None, ["an integer", "got True"]),
    ({"metadata": {"k": 1}}, "metadata.k", None, ["string of at most 512 characters", "got 1"]),
    ({"metadata": {"k": "v" * 513}}, "metadata.k", None, ["at most 512 characters", "got 'vvv"]),
    ({"metadata": {"k" * 65: "v"}}, "metadata", None, ["keys of at most 64 characters", "kkk"]),
    ({"metadata": {str(i): "v" for i in range(17)}}, "metadata", None, ["at most 16 pairs", "'16'"]),
    ({"metadata": ["k"]}, "metadata", None, ["an object", "got ['k']"]),
    ({"integrations": [{"type": "wandb"}]}, "integrations", None, ["not supported", "wandb"]),
]


@pytest.mark.parametrize("fields, param, code, fragments", BAD_BODIES)
def test_bad_bodies_name_param_rule_and_value(fields, param, code, fragments):
    err = refused(**fields)
    assert (err.status, err.param, err.code) == (400, param, code)
    for fragment in fragments:
        assert fragment in err.message, (fragment, err.message)


def test_setting_errors_say_which_field_is_invalid():
    err = refused(**{HP: {"n_epochs": 0}})
    assert err.message == ("Invalid hyperparameters.n_epochs: must be an integer between 1 and 50, "
                           "got 0")


def test_unknown_model_is_404_once_the_body_is_valid():
    err = refused(model="gpt-4o-mini")
    assert (err.status, err.param, err.code) == (404, "model", "model_not_found")
    assert "gpt-4o-mini" in err.message and MODEL in err.message


def test_not_an_object():
    with pytest.raises(ApiError) as err:
        parse_job_request([BASE], models=[MODEL], max_lora_rank=16,
                          allowed_target_modules=LLAMA_PROJECTIONS)
    assert err.value.status == 400 and "JSON object" in err.value.message


def test_server_limits_reach_the_bounds_and_defaults():
    assert refused(max_lora_rank=4, lora={"r": 5}).message.endswith("between 1 and 4, got 5")
    req = parse(max_lora_rank=4, allowed=["v_proj", "q_proj"])
    assert req.settings.lora.r == 4 and req.settings.lora.target_modules == ("q_proj", "v_proj")
    assert parse(allowed=["lm_head"]).settings.lora.target_modules == ("lm_head",)


def test_valid_body_at_every_bound():
    req = parse(validation_file="file-def", suffix="a" * 64, seed=MAX_SEED,
                metadata={"k" * 64: "v" * 512, **{str(i): "" for i in range(15)}},
                integrations=[], method={"type": "supervised", "supervised": {"hyperparameters": {
                    "n_epochs": 50, "batch_size": 1, "learning_rate_multiplier": 10}}},
                lora={"r": 16, "alpha": 1024, "target_modules": ["q_proj"], "dropout": 0})
    assert (req.validation_file, req.suffix, req.seed) == ("file-def", "a" * 64, MAX_SEED)
    assert len(req.metadata) == 16
    hp = req.settings
    assert hp.to_openai() == {"n_epochs": 50, "batch_size": 1, "learning_rate_multiplier": 10.0}
    assert hp.lora.to_dict() == {"r": 16, "alpha": 1024.0, "target_modules": ["q_proj"],
                                 "dropout": 0.0}
    # Ints are numbers: stored as floats, so equal settings compare equal.
    assert isinstance(hp.learning_rate_multiplier, float) and isinstance(hp.lora.alpha, float)
    assert parse(seed=0).seed == 0


def test_null_is_absent_and_auto_is_the_default():
    default = parse()
    nulls = parse(validation_file=None, suffix=None, seed=None, metadata=None, integrations=None,
                  hyperparameters=None, method=None, lora=None)
    assert nulls.settings == default.settings and nulls.metadata is None
    auto = parse(hyperparameters={"n_epochs": "auto", "batch_size": None,
                                  "learning_rate_multiplier": "auto"},
                 method={"type": "supervised", "supervised": None})
    assert auto.settings == default.settings
    assert default.settings.to_openai() == {"n_epochs": 3, "batch_size": 4,
                                            "learning_rate_multiplier": 1.0}


def test_both_forms_agree_once_auto_is_resolved():
    req = parse(hyperparameters={"n_epochs": 3, "batch_size": 8},
                method={"supervised": {"hyperparameters": {"n_epochs": "auto", "batch_size": 8}}})
    assert (req.settings.n_epochs, req.settings.batch_size) == (3, 8)


def test_seed_is_chosen_when_absent():
    seeds = {parse().seed for _ in range(8)}
    assert all(0 <= s <= MAX_SEED for s in seeds) and len(seeds) > 1


def test_long_values_are_abbreviated_in_messages():
    err = refused(model=["x" * 10_000] * 1000)
    assert err.param == "model" and len(err.message) < 2000


def test_fields_are_the_documented_ones():
    assert set(FIELDS) == {"model", "training_file", "validation_file", "hyperparameters", "method",
                           "suffix", "seed", "metadata", "integrations", "lora"}


@pytest.mark.parametrize("kwargs, field", [
    ({"n_epochs": True}, "n_epochs"), ({"batch_size": 1.0}, "batch_size"),
    ({"learning_rate_multiplier": "1"}, "learning_rate_multiplier"),
])
def test_direct_construction_is_as_strict_as_a_request(kwargs, field):
    with pytest.raises(SettingError) as err:
        Hyperparameters(**kwargs)
    assert err.value.field == field and repr(next(iter(kwargs.values()))) in err.value.problem


def test_a_stored_job_with_a_bad_setting_names_it():
    job = {"hyperparameters": {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1.0},
           "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "q_proj"], "dropout": 0.0}}
    with pytest.raises(SettingError) as err:
        Hyperparameters.from_job(job)
    assert err.value.field == "lora.target_modules" and "duplicates" in err.value.problem
