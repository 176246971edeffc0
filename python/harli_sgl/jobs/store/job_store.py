"""JobStore: files, fine-tuning jobs, their events, checkpoints and leases, and the fleet's instances.

Two backends, one body of logic. Without ``db_url`` the store is the SQLite
file ``<workdir>/harli.db``: one instance, whose HTTP process and finetune
worker each open their own ``JobStore`` on the same workdir. With
``db_url="postgresql://..."`` every instance of a fleet opens the same
database, and ``files_dir`` points at a directory they all share. Uploaded
bytes live at ``<files_dir>/<file_id>.jsonl`` (default ``<workdir>/files``).
What differs between the backends is in :mod:`harli_sgl.jobs.db`; the parts of
the store (:mod:`.files`, :mod:`.lifecycle`, :mod:`.leases`, :mod:`.log`,
:mod:`.fleet`) are written once over it. Open a store per process: never
carry one across ``fork``; within a process it is shared by all threads.

Nothing stored is lost by a bad request: every read-modify-write is one
transaction that locks what it decides on, so checks such as "is this file used
by a live job" and the write they guard are atomic across processes and
instances. A full disk is a state to wait out, not a bug: every write that
fails for lack of space raises :class:`StorageFullError`, so the API can answer
507 and the worker can retry later.

Job lifecycle (anything else raises :class:`InvalidTransitionError`)::

    validating_files -> queued | failed | cancelled
    queued           -> running | cancelled | failed
    running          -> succeeded | failed | cancelled | queued   (lease lost, worker restarted)
    succeeded, failed, cancelled: terminal

Cancelling a running job makes it ``cancelled`` at once; the worker polls
:meth:`JobStore.is_cancelled` between pieces of work and stops. Status changes
add an event themselves, so callers need not log them.

Tenants (:mod:`.keys`, :mod:`.tenants`, :mod:`.quota`): every object belongs to
one. Methods that the API calls take the caller's ``tenant`` and see only its
objects; the worker, which trains every tenant's jobs, passes none. Quotas are
checked in the transaction that would exceed them.
"""

from __future__ import annotations

import os

from harli_sgl.jobs.db import open_database
from harli_sgl.jobs.db.migrations import migrate
from harli_sgl.jobs.store.files import FileRecords
from harli_sgl.jobs.store.fleet import FleetRecords
from harli_sgl.jobs.store.keys import KeyRecords
from harli_sgl.jobs.store.leases import JobLeases
from harli_sgl.jobs.store.log import JobLog
from harli_sgl.jobs.store.tenants import TenantRecords
from harli_sgl.jobs.tenants import Limits

DB_NAME = "harli.db"
FILES_DIR = "files"


class JobStore(FileRecords, JobLeases, JobLog, FleetRecords, KeyRecords, TenantRecords):
    """Persistent state of the fine-tuning API; see the module docstring for the model.

    Args:
        workdir: the instance's working directory (holds ``harli.db`` on SQLite).
        db_url: ``postgresql://user:password@host:port/dbname`` for a fleet's shared
            database; None for SQLite in the workdir.
        files_dir: where uploaded bytes live; default ``<workdir>/files``.
        default_limits: every tenant's quotas, unless an admin gave it its own.
    """

    def __init__(self, workdir: str, *, db_url: str | None = None,
                 files_dir: str | None = None, default_limits: Limits = Limits()) -> None:
        self.workdir = os.path.abspath(workdir)
        self.default_limits = default_limits
        self.files_dir = os.path.abspath(files_dir or os.path.join(self.workdir, FILES_DIR))
        self._init_files()
        self._init_database(db_url)

    def _init_files(self) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        os.makedirs(self.files_dir, exist_ok=True)
        self._remove_stale_temporaries()

    def _init_database(self, db_url: str | None) -> None:
        self._db = open_database(db_url, os.path.join(self.workdir, DB_NAME))
        try:
            migrate(self._db)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()
