"""A job's training settings: OpenAI hyperparameters plus LoRA, validated once, frozen.

Requests may give hyperparameters in either OpenAI form: the legacy top-level
``hyperparameters={...}`` or ``method={"type": "supervised", "supervised":
{"hyperparameters": {...}}}``. Each value is a number or ``"auto"``, and "auto"
is resolved when the job is created, so a stored job never changes meaning:

==========================  ======  =========  =====================================
field                       auto    bounds     meaning
==========================  ======  =========  =====================================
n_epochs                    3       1..50      passes over the training file
batch_size                  4       1..256     examples per optimizer step
learning_rate_multiplier    1.0     (0, 10]    lr = BASE_LEARNING_RATE (1e-3) * this
==========================  ======  =========  =====================================

LoRA is Harli's documented extra body field ``lora={"r", "alpha",
"target_modules", "dropout"}`` (defaults r=8, alpha=16 with 0 < alpha <= 1024, the seven Llama
projections, dropout 0; the r and target_modules defaults are clipped to the
server's limits when those are smaller). Its bounds come from the server, because SGLang
reserves LoRA capacity at start-up: ``r`` may not exceed the server's max rank
and ``target_modules`` must be a subset of what the server reserved.

Validation lives in ``__post_init__`` and raises :class:`SettingError` (a
``ValueError``) whose ``field`` names the offending field, e.g. ``n_epochs`` or
``lora.r``; :meth:`Hyperparameters.from_request` re-prefixes it with where the
field sat in the request (``method.supervised.hyperparameters.n_epochs``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

AUTO = "auto"
BASE_LEARNING_RATE = 1e-3

AUTO_N_EPOCHS = 3
AUTO_BATCH_SIZE = 4
AUTO_LEARNING_RATE_MULTIPLIER = 1.0
MAX_N_EPOCHS = 50
MAX_BATCH_SIZE = 256
MAX_LEARNING_RATE_MULTIPLIER = 10.0

LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_LORA_R = 8
DEFAULT_LORA_ALPHA = 16.0
# PEFT scales the update by alpha / r. Beyond ~1024 (scaling 64 at r=16, 1024 at
# r=1) the first steps blow the activations up and the loss goes flat or NaN:
# such a job would "succeed" with a useless adapter, so it is refused up front.
MAX_LORA_ALPHA = 1024.0
DEFAULT_LORA_DROPOUT = 0.0

HYPERPARAMETER_FIELDS = ("n_epochs", "batch_size", "learning_rate_multiplier")
LORA_FIELDS = ("r", "alpha", "target_modules", "dropout")


class SettingError(ValueError):
    """An invalid training setting; ``field`` is its dotted name (``n_epochs``, ``lora.r``)."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name
        self.problem = problem

    def under(self, prefix: str) -> SettingError:
        return SettingError(f"{prefix}.{self.field}" if prefix else self.field, self.problem)


def _is_number(value: object) -> bool:
    # bool is an int subclass; True epochs is a client bug, not 1.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SettingError(name, f"must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise SettingError(name, f"must be between {lo} and {hi}, got {value}")
    return value


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
        _check_int("lora.r", self.r, 1, max_rank if max_rank is not None else 2**16)
        if not _is_number(self.alpha) or not math.isfinite(self.alpha) or self.alpha <= 0:
            raise SettingError("lora.alpha", f"must be a positive number, got {self.alpha!r}")
        if self.alpha > MAX_LORA_ALPHA:
            raise SettingError("lora.alpha", f"must be at most {MAX_LORA_ALPHA:g} (the update is "
                               f"scaled by alpha / r), got {self.alpha!r}")
        if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise SettingError("lora.dropout", f"must be a number in [0, 1), got {self.dropout!r}")
        modules = self.target_modules
        if isinstance(modules, str) or not isinstance(modules, Sequence) or not modules:
            raise SettingError("lora.target_modules",
                               f"must be a non-empty list of module names, got {modules!r}")
        if not all(isinstance(m, str) for m in modules):
            raise SettingError("lora.target_modules", f"must contain only strings, got {modules!r}")
        if len(set(modules)) != len(modules):
            raise SettingError("lora.target_modules", f"contains duplicates: {list(modules)}")
        if allowed_target_modules is not None:
            unknown = [m for m in modules if m not in allowed_target_modules]
            if unknown:
                raise SettingError("lora.target_modules",
                                   f"{unknown} not allowed on this server; allowed: "
                                   f"{list(allowed_target_modules)}")
        # Normalise to immutable, plain types so equal settings compare and hash equal.
        object.__setattr__(self, "target_modules", tuple(modules))
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "dropout", float(self.dropout))

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

    def __post_init__(self) -> None:
        _check_int("n_epochs", self.n_epochs, 1, MAX_N_EPOCHS)
        _check_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        lrm = self.learning_rate_multiplier
        if not _is_number(lrm) or not math.isfinite(lrm) or not 0 < lrm <= MAX_LEARNING_RATE_MULTIPLIER:
            raise SettingError("learning_rate_multiplier",
                               f"must be a number in (0, {MAX_LEARNING_RATE_MULTIPLIER:g}], got {lrm!r}")
        if not isinstance(self.lora, LoraSettings):
            raise SettingError("lora", f"must be LoraSettings, got {type(self.lora).__name__}")
        object.__setattr__(self, "learning_rate_multiplier", float(lrm))

    @property
    def learning_rate(self) -> float:
        return BASE_LEARNING_RATE * self.learning_rate_multiplier

    def to_openai(self) -> dict[str, Any]:
        """The ``hyperparameters`` object of an OpenAI fine-tuning job."""
        return {"n_epochs": self.n_epochs, "batch_size": self.batch_size,
                "learning_rate_multiplier": self.learning_rate_multiplier}

    @classmethod
    def from_request(cls, *, hyperparameters: object = None, method: object = None,
                     lora: object = None, max_lora_rank: int | None = None,
                     allowed_target_modules: Sequence[str] | None = None) -> Hyperparameters:
        """Build from the request's ``hyperparameters``/``method``/``lora`` fields.

        Raises :class:`SettingError` whose ``field`` is the request path of the bad value.
        """
        values, where = _pick_hyperparameters(hyperparameters, method)
        resolved = {name: values.get(name, AUTO) for name in HYPERPARAMETER_FIELDS}
        auto = {"n_epochs": AUTO_N_EPOCHS, "batch_size": AUTO_BATCH_SIZE,
                "learning_rate_multiplier": AUTO_LEARNING_RATE_MULTIPLIER}
        for name, value in resolved.items():
            if value == AUTO or value is None:
                resolved[name] = auto[name]
        lora_settings = _lora_from_request(lora, max_lora_rank, allowed_target_modules)
        try:
            return cls(lora=lora_settings, **resolved)
        except SettingError as exc:
            raise exc.under(where) from None

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> Hyperparameters:
        """Rebuild from a stored job object (its ``hyperparameters`` and ``lora``)."""
        return cls(lora=LoraSettings(**job["lora"]), **job["hyperparameters"])


def _pick_hyperparameters(hyperparameters: object, method: object) -> tuple[dict[str, Any], str]:
    """The hyperparameter dict from either request form, and its request path."""
    from_method: object = None
    if method is not None:
        if not isinstance(method, Mapping):
            raise SettingError("method", f"must be an object, got {type(method).__name__}")
        unknown = set(method) - {"type", "supervised"}
        if unknown:
            raise SettingError(f"method.{sorted(unknown)[0]}",
                               "only the 'supervised' method is supported")
        if method.get("type", "supervised") != "supervised":
            raise SettingError("method.type",
                               f"only 'supervised' is supported, got {method.get('type')!r}")
        supervised = method.get("supervised")
        if supervised is None:
            supervised = {}
        if not isinstance(supervised, Mapping):
            raise SettingError("method.supervised", "must be an object")
        if set(supervised) - {"hyperparameters"}:
            raise SettingError(f"method.supervised.{sorted(set(supervised) - {'hyperparameters'})[0]}",
                               "unknown field")
        from_method = supervised.get("hyperparameters")
    if hyperparameters is not None and from_method is not None and hyperparameters != from_method:
        raise SettingError("hyperparameters", "give hyperparameters either at the top level or "
                           "under method.supervised.hyperparameters, not both")
    if from_method is not None:
        values, where = from_method, "method.supervised.hyperparameters"
    else:
        values, where = hyperparameters if hyperparameters is not None else {}, "hyperparameters"
    if not isinstance(values, Mapping):
        raise SettingError(where, f"must be an object, got {type(values).__name__}")
    unknown = sorted(set(values) - set(HYPERPARAMETER_FIELDS))
    if unknown:
        raise SettingError(f"{where}.{unknown[0]}",
                           f"unknown hyperparameter; expected {list(HYPERPARAMETER_FIELDS)}")
    return dict(values), where


def _lora_from_request(lora: object, max_rank: int | None,
                       allowed: Sequence[str] | None) -> LoraSettings:
    if lora is None:
        lora = {}
    if not isinstance(lora, Mapping):
        raise SettingError("lora", f"must be an object, got {type(lora).__name__}")
    unknown = sorted(set(lora) - set(LORA_FIELDS))
    if unknown:
        raise SettingError(f"lora.{unknown[0]}", f"unknown LoRA setting; expected {list(LORA_FIELDS)}")
    settings = dict(lora)
    # Defaults are clipped to the server's limits, so a request that leaves LoRA
    # alone is always accepted, whatever capacity the server reserved.
    if "r" not in settings and max_rank is not None:
        settings["r"] = min(DEFAULT_LORA_R, max_rank)
    if "target_modules" not in settings and allowed is not None:
        settings["target_modules"] = ([m for m in LLAMA_PROJECTIONS if m in allowed]
                                      or list(allowed))
    return LoraSettings(**settings, max_rank=max_rank, allowed_target_modules=allowed)
