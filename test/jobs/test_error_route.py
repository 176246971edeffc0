"""How store refusals and request errors below the router become HTTP answers."""

import errno

from harli_sgl.jobs.error_route import as_api_error
from harli_sgl.jobs.store_errors import (FileContentError, FileInUseError, InvalidTransitionError,
                                         NotFoundError, QuotaExceededError)


def test_a_missing_target_is_404_and_a_missing_reference_a_400_naming_it():
    assert as_api_error(NotFoundError("no such job")).status == 404
    ref = as_api_error(NotFoundError("no such file", param="training_file"))
    assert (ref.status, ref.body()["error"]["param"], ref.body()["error"]["code"]) == (
        400, "training_file", "invalid_training_file")
    assert as_api_error(NotFoundError("bad cursor", param="after")).body()["error"]["code"] == \
        "invalid_cursor"


def test_store_refusals_keep_their_meaning():
    assert as_api_error(InvalidTransitionError("already cancelled")).status == 400
    assert as_api_error(FileInUseError("used by a job")).status == 409
    quota = as_api_error(QuotaExceededError("too many jobs", "max_queued_jobs", 3))
    assert (quota.status, quota.body()["error"]["param"]) == (429, "max_queued_jobs")
    assert as_api_error(OSError(errno.ENOSPC, "No space left on device")).status == 507
    # A stored file that cannot be read back is the server's fault, not the request's.
    assert as_api_error(FileContentError("unreadable")).status == 500


def test_a_genuine_bug_is_left_to_the_route_which_logs_it_and_answers_500():
    assert as_api_error(KeyError("oops")) is None
    assert as_api_error(RuntimeError("boom")) is None
