"""The body of ``POST /v1/fine_tuning/jobs``: parsed and checked before anything is stored.

Everything that can be judged from the request alone is judged here, by one
pydantic model of the body (:class:`JobRequestBody`, which adds the job's other
fields to the settings of :mod:`.hyperparameters`), so a bad request fails with
the exact ``param`` at fault and never creates a job. Unknown top-level fields
are refused (``extra="forbid"``: a typo such as ``hyperparameter`` would
otherwise silently train with defaults). A JSON null is the same as leaving the
field out. Whether the model is served is judged after the body is valid;
whether the referenced files exist is the router's business, since that needs
the store.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationError

from harli_sgl.jobs import ids
from harli_sgl.jobs.auto_hyperparameters import auto_fields
from harli_sgl.jobs.errors import ApiError, bad_request
from harli_sgl.jobs.hyperparameters import (Hyperparameters, SettingError, SettingsRequest,
                                            first_error, must_be, setting_error, validation_context)

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_SEED = 2**31 - 1

NonEmptyString = Annotated[str, Field(min_length=1), must_be("a non-empty string")]
Suffix = Annotated[str, AfterValidator(ids.check_suffix), must_be(
    f"1-{ids.MAX_SUFFIX_CHARS} characters of letters, digits, '_' or '-', "
    "starting with a letter or digit")]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED), must_be(f"an integer in [0, {MAX_SEED}]")]
MetadataValue = Annotated[str, Field(max_length=MAX_METADATA_VALUE_CHARS),
                          must_be(f"a string of at most {MAX_METADATA_VALUE_CHARS} characters")]
Metadata = Annotated[
    dict[Annotated[str, Field(max_length=MAX_METADATA_KEY_CHARS)], MetadataValue],
    Field(max_length=MAX_METADATA_PAIRS),
    must_be(f"an object of at most {MAX_METADATA_PAIRS} pairs with keys of at most "
          f"{MAX_METADATA_KEY_CHARS} characters")]
NoIntegrations = Annotated[list, Field(max_length=0), must_be(
    "an empty list (integrations are not supported by this server)")]


class JobRequestBody(SettingsRequest):
    """The whole request body; ``hyperparameters``, ``method`` and ``lora`` come from the base."""

    model: NonEmptyString
    training_file: NonEmptyString
    validation_file: Annotated[str, must_be("a file id string")] | None = None
    suffix: Suffix | None = None
    seed: Seed | None = None  # None: chosen at random, and reported, so the run can be repeated
    metadata: Metadata | None = None
    integrations: NoIntegrations | None = None


FIELDS = tuple(JobRequestBody.model_fields)
SETTINGS_FIELDS = tuple(SettingsRequest.model_fields)


@dataclass(frozen=True)
class JobRequest:
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    settings: Hyperparameters
    metadata: dict[str, str] | None
    auto: frozenset[str] = frozenset()  # hyperparameters left to "auto" (jobs/auto_hyperparameters.py)


def parse_job_request(body: object, *, models: Sequence[str], max_lora_rank: int,
                      allowed_target_modules: Sequence[str]) -> JobRequest:
    """Validate a decoded JSON body; raise :class:`ApiError` naming the offending ``param``."""
    if not isinstance(body, Mapping):
        raise bad_request("the request body must be a JSON object")
    try:
        request = JobRequestBody.model_validate(
            {k: v for k, v in body.items() if v is not None},
            context=validation_context(max_lora_rank, allowed_target_modules))
        settings = request.settings(max_lora_rank, allowed_target_modules)
    except ValidationError as exc:
        raise _api_error(exc) from None
    except SettingError as exc:
        raise _invalid(exc) from None
    if request.model not in models:
        raise ApiError(404, f"The model '{request.model}' does not exist or is not served here; "
                       f"available: {list(models)}", param="model", code="model_not_found")
    # OpenAI picks a seed when none is given and reports it, so the run can be repeated.
    seed = secrets.randbelow(MAX_SEED + 1) if request.seed is None else request.seed
    return JobRequest(model=request.model, training_file=request.training_file,
                      validation_file=request.validation_file, suffix=request.suffix, seed=seed,
                      settings=settings, metadata=request.metadata,
                      auto=auto_fields(_hyperparameter_forms(body)))


def _hyperparameter_forms(body: Mapping) -> list[Mapping | None]:
    """Every place the (already validated) body gives hyperparameters: top level, the method's."""
    method = body.get("method") or {}
    under = (method.get(method.get("type") or "supervised") or {}).get("hyperparameters")
    return [body.get("hyperparameters"), under]


def _api_error(exc: ValidationError) -> ApiError:
    error = first_error(exc)
    name = str(error["loc"][0])
    if error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
        return bad_request(f"Unrecognized request argument supplied: {name}", param=name)
    if error["type"] == "missing":
        return bad_request(f"Missing required parameter: '{name}'", param=name)
    return _invalid(setting_error(error, JobRequestBody))


def _invalid(exc: SettingError) -> ApiError:
    """400 naming the field; a training setting's carries code ``invalid_hyperparameters``."""
    setting = exc.field.split(".")[0] in SETTINGS_FIELDS
    return bad_request(f"Invalid {exc.field}: {exc.problem}", param=exc.field,
                       code="invalid_hyperparameters" if setting else None)
