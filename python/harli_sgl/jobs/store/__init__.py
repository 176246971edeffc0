"""The job store: :class:`JobStore` (see :mod:`.job_store`) and the errors it raises.

Callers import from here; the submodules are the store's parts, one concern each.
"""

from harli_sgl.jobs.store.base import DEFAULT_LEASE_S, LOCAL_OWNER, TRANSITIONS
from harli_sgl.jobs.store_errors import (FileContentError, FileInUseError, InvalidTransitionError,
                                         LeaseLostError, NotFoundError, QuotaExceededError,
                                         StorageFullError, StoreError, is_storage_full)
from harli_sgl.jobs.store.fleet import Adapter
from harli_sgl.jobs.store.job_store import DB_NAME, FILES_DIR, JobStore
from harli_sgl.jobs.store.keys import NewKey
from harli_sgl.jobs.store.leases import Lease
from harli_sgl.jobs.store.tenants import AdapterAccess
from harli_sgl.jobs.store.log import EVENT_LEVELS, EVENT_TYPES

__all__ = [
    "DB_NAME", "DEFAULT_LEASE_S", "EVENT_LEVELS", "EVENT_TYPES", "FILES_DIR", "LOCAL_OWNER",
    "TRANSITIONS", "Adapter", "AdapterAccess", "FileContentError", "FileInUseError",
    "InvalidTransitionError", "JobStore", "Lease", "LeaseLostError", "NewKey", "NotFoundError",
    "QuotaExceededError", "StorageFullError", "StoreError", "is_storage_full",
]
