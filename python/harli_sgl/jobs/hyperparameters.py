"""A job's training settings: OpenAI hyperparameters plus LoRA, validated once, frozen.

Requests may give hyperparameters in either OpenAI form: the legacy top-level
``hyperparameters={...}`` or ``method={"type": "supervised", "supervised":
{"hyperparameters": {...}}}`` (both at once only if they agree). Each value is a
number, ``"auto"`` or null, and "auto"/null is resolved when the job is created,
so a stored job never changes meaning. The "auto" column is what a request alone
resolves to; the router then resolves "auto" from the training file's size
(:mod:`.auto_hyperparameters`):

==========================  ======  =========  =====================================
field                       auto    bounds     meaning
==========================  ======  =========  =====================================
n_epochs                    3       1..50      passes over the training file
batch_size                  4       1..256     examples per optimizer step
learning_rate_multiplier    1.0     (0, 10]    lr = BASE_LEARNING_RATE (1e-3) * this
==========================  ======  =========  =====================================

DPO jobs give them as ``method={"type": "dpo", "dpo": {"hyperparameters": {...}}}``
with the same three plus ``beta`` ("auto": 0.1, bounds (0, 2]); a DPO job stores
``beta`` beside them, which is what makes it one (:func:`method_object`).

LoRA is Harli's documented extra body field ``lora={"r", "alpha",
"target_modules", "dropout"}`` (defaults r=8, alpha=16 with 0 < alpha <= 1024, the seven Llama
projections, dropout 0; the r and target_modules defaults are clipped to the
server's limits when those are smaller). Its bounds come from the server, because SGLang
reserves LoRA capacity at start-up: ``r`` may not exceed the server's max rank
and ``target_modules`` must be a subset of what the server reserved.

Pydantic does the field checks: the request models declare each field's type and
bounds, ``extra="forbid"`` (a misspelt field is refused) and ``strict=True`` (``True``
is no epoch count, ``"3"`` no number); the server's limits arrive in the validation
``context``. :func:`must_be` words a failure as the allowed range plus the value
received, and :func:`setting_error` makes it a :class:`SettingError` whose ``field``
is the request path (``method.supervised.hyperparameters.n_epochs``, ``lora.r``).

:class:`Hyperparameters` and :class:`LoraSettings` remain frozen dataclasses: the
resolved form a job stores and trains with (no "auto", server defaults applied,
hashable). They check themselves through the same models, so a job rebuilt by
:meth:`Hyperparameters.from_job` meets the rules a request met.

It stays whole above 300 lines: the request models and the resolved dataclasses
check themselves through the same rules, which read best beside each other.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, field, fields
from typing import Annotated, Any, Literal, get_args

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      ValidationError, ValidationInfo, WrapValidator)
from pydantic_core import ErrorDetails, PydanticCustomError

AUTO = "auto"
BASE_LEARNING_RATE = 1e-3

AUTO_N_EPOCHS = 3
AUTO_BATCH_SIZE = 4
AUTO_LEARNING_RATE_MULTIPLIER = 1.0
MAX_N_EPOCHS = 50
MAX_BATCH_SIZE = 256
MAX_LEARNING_RATE_MULTIPLIER = 10.0
AUTO_BETA = 0.1  # OpenAI's and TRL's default
MAX_BETA = 2.0

LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_LORA_R = 8
DEFAULT_LORA_ALPHA = 16.0
# PEFT scales the update by alpha / r. Beyond ~1024 (scaling 64 at r=16, 1024 at
# r=1) the first steps blow the activations up and the loss goes flat or NaN:
# such a job would "succeed" with a useless adapter, so it is refused up front.
MAX_LORA_ALPHA = 1024.0
DEFAULT_LORA_DROPOUT = 0.0
UNLIMITED_LORA_RANK = 2**16  # r's bound when no server limit is given

HYPERPARAMETER_FIELDS = ("n_epochs", "batch_size", "learning_rate_multiplier")

# The error type of every message worded here; pydantic's own types are reworded.
SETTING = "invalid_setting"


class SettingError(ValueError):
    """An invalid training setting; ``field`` is its dotted name (``n_epochs``, ``lora.r``)."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name
        self.problem = problem


# ----------------------------------------------------------- field types

_short = reprlib.Repr()  # the value received, abbreviated: a message never echoes a whole body
_short.maxstring = _short.maxother = 80
_short.maxlist = _short.maxdict = 16


def must_be(what: str) -> WrapValidator:
    """Word any failure of the checks inside it as "must be <what>, got <value>".

    ``what`` may name a validation-context key in braces (``{max_lora_rank}``).
    Errors already worded here (by validators outside pydantic's own) pass unchanged.
    """
    def wrap(value: Any, handler: Any, info: ValidationInfo) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            if any(e["type"] == SETTING for e in exc.errors()):
                raise
            raise PydanticCustomError(SETTING, "must be {what}, got {got}", {
                "what": what.format_map(info.context or {}), "got": _short.repr(value)}) from None
    return WrapValidator(wrap)


def _auto(default: object) -> BeforeValidator:
    """"auto" and null mean the default, resolved now so the stored job never changes meaning."""
    return BeforeValidator(lambda v: default if v is None or v == AUTO else v)


def _at_most(context_key: str) -> AfterValidator:
    """A bound the server decides at start-up (it arrives in the validation context)."""
    def check(value: Any, info: ValidationInfo) -> Any:
        if value > (info.context or {}).get(context_key, value):
            raise ValueError(context_key)
        return value
    return AfterValidator(check)


def _distinct_and_served(modules: list[str], info: ValidationInfo) -> list[str]:
    if len(set(modules)) != len(modules):
        raise PydanticCustomError(SETTING, "contains duplicates: {modules}", {"modules": modules})
    allowed = (info.context or {}).get("allowed_target_modules")
    unknown = [m for m in modules if allowed is not None and m not in allowed]
    if unknown:
        raise PydanticCustomError(SETTING, "{unknown} not allowed on this server; allowed: {allowed}",
                                  {"unknown": unknown, "allowed": list(allowed)})
    return modules


NEpochs = Annotated[int, Field(ge=1, le=MAX_N_EPOCHS),
                    must_be(f"an integer between 1 and {MAX_N_EPOCHS}"), _auto(AUTO_N_EPOCHS)]
BatchSize = Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE),
                      must_be(f"an integer between 1 and {MAX_BATCH_SIZE}"), _auto(AUTO_BATCH_SIZE)]
LearningRateMultiplier = Annotated[
    float, Field(gt=0, le=MAX_LEARNING_RATE_MULTIPLIER),
    must_be(f"a number in (0, {MAX_LEARNING_RATE_MULTIPLIER:g}]"),
    _auto(AUTO_LEARNING_RATE_MULTIPLIER)]
Beta = Annotated[float, Field(gt=0, le=MAX_BETA), must_be(f"a number in (0, {MAX_BETA:g}]"),
                 _auto(AUTO_BETA)]
LoraRank = Annotated[int, Field(ge=1), _at_most("max_lora_rank"),
                     must_be("an integer between 1 and {max_lora_rank}")]
LoraAlpha = Annotated[float, Field(gt=0, le=MAX_LORA_ALPHA), must_be(
    f"a number in (0, {MAX_LORA_ALPHA:g}] (the update is scaled by alpha / r)")]
TargetModules = Annotated[list[str], Field(min_length=1),
                          must_be("a non-empty list of module names"),
                          AfterValidator(_distinct_and_served)]
LoraDropout = Annotated[float, Field(ge=0, lt=1), must_be("a number in [0, 1)")]


# ---------------------------------------------------------- request models

class StrictModel(BaseModel):
    """Unknown fields refused; no coercion (``True`` is no count, ``"1"`` no number); finite floats."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class HyperparametersRequest(StrictModel):
    n_epochs: NEpochs = AUTO_N_EPOCHS
    batch_size: BatchSize = AUTO_BATCH_SIZE
    learning_rate_multiplier: LearningRateMultiplier = AUTO_LEARNING_RATE_MULTIPLIER


class LoraRequest(StrictModel):
    """Defaults are resolved by :meth:`settings`: r and target_modules depend on the server."""

    r: LoraRank = DEFAULT_LORA_R
    alpha: LoraAlpha = DEFAULT_LORA_ALPHA
    target_modules: TargetModules = list(LLAMA_PROJECTIONS)
    dropout: LoraDropout = DEFAULT_LORA_DROPOUT

    def settings(self, max_rank: int | None, allowed: Sequence[str] | None) -> LoraSettings:
        given = self.model_dump(include=self.model_fields_set)
        # Defaults are clipped to the server's limits, so a request that leaves LoRA
        # alone is always accepted, whatever capacity the server reserved.
        if "r" not in given and max_rank is not None:
            given["r"] = min(DEFAULT_LORA_R, max_rank)
        if "target_modules" not in given and allowed is not None:
            given["target_modules"] = [m for m in LLAMA_PROJECTIONS if m in allowed] or list(allowed)
        return LoraSettings(**given, max_rank=max_rank, allowed_target_modules=allowed)


class SupervisedRequest(StrictModel):
    hyperparameters: HyperparametersRequest | None = None


class DpoHyperparametersRequest(HyperparametersRequest):
    beta: Beta = AUTO_BETA


class DpoRequest(StrictModel):
    hyperparameters: DpoHyperparametersRequest | None = None


class MethodRequest(StrictModel):
    type: Annotated[Literal["supervised", "dpo"], must_be(
        "'supervised' or 'dpo' (reinforcement is not supported)")] = "supervised"
    supervised: SupervisedRequest | None = None
    dpo: DpoRequest | None = None


class SettingsRequest(StrictModel):
    """The request fields that make a job's :class:`Hyperparameters`; null means absent."""

    hyperparameters: HyperparametersRequest | None = None
    method: MethodRequest | None = None
    lora: LoraRequest | None = None

    def settings(self, max_rank: int | None, allowed: Sequence[str] | None) -> Hyperparameters:
        lora = self.lora if self.lora is not None else LoraRequest()
        if self.method is not None and self.method.type == "dpo":
            return self._dpo_settings(lora.settings(max_rank, allowed))
        if self.method is not None and self.method.dpo is not None:
            raise SettingError("method.dpo", "given, but method.type is 'supervised'")
        top, under = self.hyperparameters, None
        if self.method is not None and self.method.supervised is not None:
            under = self.method.supervised.hyperparameters
        if top is not None and under is not None and dict(top) != dict(under):
            raise SettingError("hyperparameters", "give hyperparameters either at the top level or "
                               "under method.supervised.hyperparameters, not both")
        chosen = next((h for h in (top, under) if h is not None), HyperparametersRequest())
        return Hyperparameters(**dict(chosen), lora=lora.settings(max_rank, allowed))

    def _dpo_settings(self, lora: LoraSettings) -> Hyperparameters:
        if self.hyperparameters is not None:
            raise SettingError("hyperparameters", "a DPO job takes its hyperparameters under "
                               "method.dpo.hyperparameters, not at the top level")
        if self.method.supervised is not None:
            raise SettingError("method.supervised", "given, but method.type is 'dpo'")
        given = self.method.dpo.hyperparameters if self.method.dpo is not None else None
        return Hyperparameters(**dict(given or DpoHyperparametersRequest()), lora=lora)


def validation_context(max_rank: int | None, allowed: Sequence[str] | None) -> dict[str, Any]:
    """The server's limits, as the validators above read them."""
    return {"max_lora_rank": UNLIMITED_LORA_RANK if max_rank is None else max_rank,
            "allowed_target_modules": allowed}


def first_error(exc: ValidationError) -> ErrorDetails:
    """The error to report: an unknown field first, since a typo explains what follows it."""
    return min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")


def setting_error(error: ErrorDetails, model: type[BaseModel], prefix: str = "") -> SettingError:
    """One pydantic error of validating ``model`` as a :class:`SettingError` at its request path."""
    loc = [str(part) for part in error["loc"]]
    kind = error["type"]
    if kind == SETTING:
        problem = error["msg"]
    elif kind == "extra_forbidden":
        problem = f"unknown field; expected {_fields_at(model, loc[:-1])}"
    elif kind in ("model_type", "dict_type"):
        problem = f"must be an object, got {_short.repr(error['input'])}"
    else:  # not expected from the models above, but worded all the same
        problem = f"{error['msg']}, got {_short.repr(error.get('input'))}"
    return SettingError(".".join(([prefix] if prefix else []) + loc), problem)


def _fields_at(model: type[BaseModel], loc: Sequence[str]) -> list[str]:
    """The field names of the model nested at ``loc``: what an unknown field could have been."""
    for name in loc:
        annotation = model.model_fields[name].annotation
        model = next(t for t in (annotation, *get_args(annotation))
                     if isinstance(t, type) and issubclass(t, BaseModel))
    return list(model.model_fields)


def _validate(model: type[BaseModel], data: Any, context: dict[str, Any] | None = None,
              prefix: str = "") -> Any:
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise setting_error(first_error(exc), model, prefix) from None


# -------------------------------------------------- resolved, stored form

@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter shape. ``max_rank``/``allowed_target_modules`` are the server's limits.

    Example:
        >>> LoraSettings(r=16, target_modules=["q_proj", "v_proj"], max_rank=16).to_dict()["r"]
        16
    """

    r: int = DEFAULT_LORA_R
    alpha: float = DEFAULT_LORA_ALPHA
    target_modules: tuple[str, ...] = LLAMA_PROJECTIONS
    dropout: float = DEFAULT_LORA_DROPOUT
    max_rank: InitVar[int | None] = None
    allowed_target_modules: InitVar[Sequence[str] | None] = None

    def __post_init__(self, max_rank: int | None,
                      allowed_target_modules: Sequence[str] | None) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if isinstance(self.target_modules, tuple):  # the stored form; requests send lists
            values["target_modules"] = list(self.target_modules)
        checked = _validate(LoraRequest, values,
                            validation_context(max_rank, allowed_target_modules), prefix="lora")
        # Normalise to immutable, plain types so equal settings compare and hash equal.
        for name, value in checked:
            object.__setattr__(self, name, tuple(value) if name == "target_modules" else value)

    @property
    def scaling(self) -> float:
        """The factor PEFT applies to the low-rank update (alpha / r)."""
        return self.alpha / self.r

    def to_dict(self) -> dict[str, Any]:
        return {"r": self.r, "alpha": self.alpha,
                "target_modules": list(self.target_modules), "dropout": self.dropout}


@dataclass(frozen=True)
class Hyperparameters:
    """Resolved training settings of one job: no "auto" survives construction.

    Example:
        >>> hp = Hyperparameters.from_request(hyperparameters={"n_epochs": 2})
        >>> (hp.n_epochs, hp.batch_size, hp.learning_rate)
        (2, 4, 0.001)
    """

    n_epochs: int = AUTO_N_EPOCHS
    batch_size: int = AUTO_BATCH_SIZE
    learning_rate_multiplier: float = AUTO_LEARNING_RATE_MULTIPLIER
    lora: LoraSettings = field(default_factory=LoraSettings)
    beta: float | None = None  # set: a DPO job (see method_object)

    def __post_init__(self) -> None:
        if not isinstance(self.lora, LoraSettings):
            raise SettingError("lora", f"must be LoraSettings, got {type(self.lora).__name__}")
        checked = _validate(HyperparametersRequest,
                            {name: getattr(self, name) for name in HYPERPARAMETER_FIELDS})
        for name, value in checked:
            object.__setattr__(self, name, value)
        if self.beta is not None:
            object.__setattr__(self, "beta", _validate(DpoHyperparametersRequest, {
                "beta": self.beta}, prefix="method.dpo.hyperparameters").beta)

    @property
    def method(self) -> str:
        return "supervised" if self.beta is None else "dpo"

    @property
    def learning_rate(self) -> float:
        return BASE_LEARNING_RATE * self.learning_rate_multiplier

    def to_openai(self) -> dict[str, Any]:
        """The ``hyperparameters`` object of an OpenAI fine-tuning job."""
        return {"n_epochs": self.n_epochs, "batch_size": self.batch_size,
                "learning_rate_multiplier": self.learning_rate_multiplier}

    def to_stored(self) -> dict[str, Any]:
        """What a job stores as its ``hyperparameters``: :meth:`to_openai`, plus DPO's beta."""
        return {**self.to_openai(), **({} if self.beta is None else {"beta": self.beta})}

    @classmethod
    def from_request(cls, *, hyperparameters: object = None, method: object = None,
                     lora: object = None, max_lora_rank: int | None = None,
                     allowed_target_modules: Sequence[str] | None = None) -> Hyperparameters:
        """Build from the request's ``hyperparameters``/``method``/``lora`` fields.

        Raises :class:`SettingError` whose ``field`` is the request path of the bad value.
        """
        request = _validate(SettingsRequest,
                            {"hyperparameters": hyperparameters, "method": method, "lora": lora},
                            validation_context(max_lora_rank, allowed_target_modules))
        return request.settings(max_lora_rank, allowed_target_modules)

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> Hyperparameters:
        """Rebuild from a job object (its ``hyperparameters``, DPO's ``method`` and ``lora``)."""
        given = dict(job["hyperparameters"])
        method = job.get("method") or {}
        if method.get("type") == "dpo":  # the job object keeps beta under method only
            given.update(method["dpo"]["hyperparameters"])
        return cls(lora=LoraSettings(**job["lora"]), **given)


def method_object(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A job's OpenAI ``method`` object from its stored hyperparameters (see :meth:`to_stored`)."""
    if "beta" in stored:
        return {"type": "dpo", "dpo": {"hyperparameters": dict(stored)}}
    return {"type": "supervised", "supervised": {"hyperparameters": dict(stored)}}
