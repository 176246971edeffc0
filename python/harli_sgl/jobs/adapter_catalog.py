"""AdapterCatalog: every adapter the fleet has finished, and where its files are.

A job's adapter is written once, to its directory under ``adapters/`` in the
shared artifacts (:func:`~harli_sgl.jobs.ids.adapter_dir_name`, see
:mod:`harli_sgl.jobs.artifacts`), and the job becomes ``succeeded``
in the shared store. Any instance can therefore serve it: the catalog turns the
store's succeeded jobs into ``(name, path)`` pairs. It follows the store by
sequence number (:meth:`JobStore.succeeded_adapters`), so a poll costs one
indexed query however many adapters exist, and it answers a lookup by name for
a request that names an adapter the poll has not seen yet.

A checkpoint is servable too: :meth:`AdapterCatalog.find` also answers a
checkpoint's name (``fine_tuned_model_checkpoint``) with the checkpoint's
directory, which holds the same two PEFT files as an adapter's. Checkpoints are
never registered ahead (a job may write many): they are found on their first
request and then loaded like any adapter.

It is engine-agnostic: the SGLang hook (:mod:`harli_sgl.sglang.tokenizer_manager`)
decides what "serving" means (registering the adapter with SGLang, which loads
it on first use and evicts the least recently used past ``--max-loaded-loras``).
"""

from __future__ import annotations

from dataclasses import dataclass

from harli_sgl.jobs import ids
from harli_sgl.jobs.artifacts import Artifacts


@dataclass(frozen=True)
class Adapter:
    name: str
    path: str
    seq: int  # 0 for a checkpoint (it is not in the succeeded sequence)
    job_id: str | None = None  # the job that made it


class AdapterCatalog:
    def __init__(self, store, artifacts: Artifacts) -> None:
        self.store = store
        self.artifacts = artifacts
        self._seen_seq = 0

    def _adapter(self, found) -> Adapter:
        path = self.artifacts.path("adapters", ids.adapter_dir_name(found.job_id, found.suffix))
        return Adapter(name=found.fine_tuned_model, path=path, seq=found.seq, job_id=found.job_id)

    def new_adapters(self) -> list[Adapter]:
        """Adapters that succeeded since the last call (all of them on the first), oldest first."""
        found = [self._adapter(a) for a in self.store.succeeded_adapters(after_seq=self._seen_seq)]
        if found:
            self._seen_seq = max(a.seq for a in found)
        return found

    def find(self, name: str) -> Adapter | None:
        """The adapter called ``name``, if some job of the fleet has finished it, or the
        checkpoint called ``name``, if some job recorded it."""
        found = self.store.adapter_named(name)
        if found is not None:
            return self._adapter(found)
        checkpoint = self.store.checkpoint_named(name)
        if checkpoint is None:
            return None
        return Adapter(name=name, path=checkpoint.path, seq=0, job_id=checkpoint.job_id)
