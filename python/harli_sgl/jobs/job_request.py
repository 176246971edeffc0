"""The body of ``POST /v1/fine_tuning/jobs``: parsed and checked before anything is stored.

Everything that can be judged from the request alone is judged here, field by
field, so a bad request fails with the exact ``param`` at fault and never
creates a job. Unknown top-level fields are refused (a typo such as
``hyperparameter`` would otherwise silently train with defaults). Whether the
referenced files exist is the router's business, since that needs the store.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harli_sgl.jobs import ids
from harli_sgl.jobs.errors import ApiError, bad_request
from harli_sgl.jobs.hyperparameters import Hyperparameters, SettingError

FIELDS = ("model", "training_file", "validation_file", "hyperparameters", "method", "suffix",
          "seed", "metadata", "integrations", "lora")
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class JobRequest:
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    settings: Hyperparameters
    metadata: dict[str, str] | None


def parse_job_request(body: object, *, models: Sequence[str], max_lora_rank: int,
                      allowed_target_modules: Sequence[str]) -> JobRequest:
    """Validate a decoded JSON body; raise :class:`ApiError` naming the offending ``param``."""
    if not isinstance(body, Mapping):
        raise bad_request("the request body must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise bad_request(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0])
    model = _required_str(body, "model")
    training_file = _required_str(body, "training_file")
    validation_file = body.get("validation_file")
    if validation_file is not None and not isinstance(validation_file, str):
        raise bad_request("validation_file must be a file id string", param="validation_file")
    try:
        settings = Hyperparameters.from_request(
            hyperparameters=body.get("hyperparameters"), method=body.get("method"),
            lora=body.get("lora"), max_lora_rank=max_lora_rank,
            allowed_target_modules=allowed_target_modules)
    except SettingError as exc:
        raise bad_request(f"Invalid {exc.field}: {exc.problem}", param=exc.field,
                          code="invalid_hyperparameters") from None
    try:
        suffix = ids.check_suffix(body.get("suffix"))
    except ValueError as exc:
        raise bad_request(str(exc), param="suffix") from None
    if body.get("integrations"):
        raise bad_request("integrations are not supported by this server", param="integrations")
    if model not in models:
        raise ApiError(404, f"The model '{model}' does not exist or is not served here; "
                       f"available: {list(models)}", param="model", code="model_not_found")
    return JobRequest(model=model, training_file=training_file, validation_file=validation_file,
                      suffix=suffix, seed=_seed(body.get("seed")), settings=settings,
                      metadata=_metadata(body.get("metadata")))


def _required_str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        raise bad_request(f"Missing required parameter: '{key}'", param=key)
    if not isinstance(value, str) or not value:
        raise bad_request(f"{key} must be a non-empty string, got {value!r}", param=key)
    return value


def _seed(seed: object) -> int:
    if seed is None:
        # OpenAI picks one when none is given and reports it, so the run can be repeated.
        return secrets.randbelow(MAX_SEED + 1)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise bad_request(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}", param="seed")
    return seed


def _metadata(metadata: object) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise bad_request("metadata must be an object of string keys and values", param="metadata")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise bad_request(f"metadata holds at most {MAX_METADATA_PAIRS} pairs", param="metadata")
    for key, value in metadata.items():
        if not isinstance(key, str) or len(key) > MAX_METADATA_KEY_CHARS:
            raise bad_request(f"metadata keys are strings of at most {MAX_METADATA_KEY_CHARS} "
                              f"characters, got {key!r}", param="metadata")
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE_CHARS:
            raise bad_request(f"metadata['{key}'] must be a string of at most "
                              f"{MAX_METADATA_VALUE_CHARS} characters", param=f"metadata.{key}")
    return dict(metadata)
