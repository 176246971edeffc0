"""The fleet's shared view: which instances are alive, which has compute to spare, which adapters exist.

Each serving instance heart-beats a row into ``instances``: where it serves
(``url``), what (``model``), how much compute it measured free (``harvest``,
in whatever unit the fleet agrees on; only the order matters here) and how many
more jobs its worker can take (``room``). Heartbeats carry the database's clock,
so an instance is live while its last heartbeat is younger than ``max_age_s``
on that one clock. Work goes to the live instance with room and the most
harvest; ties go to the smallest id, so every caller picks the same one.

Adapters become servable when their job succeeds. Instances learn of them by
polling :meth:`FleetRecords.succeeded_adapters` with the highest ``seq`` they
have seen: ``succeeded_seq`` is handed out in commit order, so nothing is ever
skipped. On PostgreSQL :meth:`FleetRecords.listen_adapters` can replace the
poll's sleep: it wakes as soon as a job succeeds (the notification is sent by
the same transaction), and the caller then polls.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from harli_sgl.jobs.store.base import StoreBase
from harli_sgl.jobs.store.lifecycle import ADAPTERS_CHANNEL

DEFAULT_MAX_AGE_S = 15.0


class Adapter(NamedTuple):
    seq: int
    fine_tuned_model: str
    job_id: str
    suffix: str | None = None  # with job_id, names the adapter's directory (ids.adapter_dir_name)


class FleetRecords(StoreBase):
    def heartbeat_instance(self, instance_id: str, url: str, model: str, harvest: float,
                           room: int) -> dict[str, Any]:
        """Create or refresh this instance's row, stamped with the database's clock."""
        with self._db.write() as tx:
            tx.execute("INSERT INTO instances (id, url, model, harvest, room, heartbeat_at) "
                       "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                       "url = excluded.url, model = excluded.model, harvest = excluded.harvest, "
                       "room = excluded.room, heartbeat_at = excluded.heartbeat_at",
                       (instance_id, url, model, float(harvest), int(room), tx.now()))
            row = tx.one("SELECT * FROM instances WHERE id = ?", (instance_id,))
        return dict(row)  # type: ignore[arg-type]

    def remove_instance(self, instance_id: str) -> bool:
        """Forget an instance at once (it shuts down cleanly); False if it had no row."""
        with self._db.write() as tx:
            return tx.execute("DELETE FROM instances WHERE id = ?", (instance_id,)) == 1

    def live_instances(self, max_age_s: float = DEFAULT_MAX_AGE_S) -> list[dict[str, Any]]:
        """Instances that heart-beat within ``max_age_s``, by id."""
        with self._db.read() as tx:
            rows = tx.all("SELECT * FROM instances WHERE heartbeat_at >= ? ORDER BY id",
                          (tx.now() - max_age_s,))
        return [dict(r) for r in rows]

    def best_instance_for_work(self, max_age_s: float = DEFAULT_MAX_AGE_S) -> dict[str, Any] | None:
        """The live instance with room for a job and the most harvest (ties: smallest id)."""
        with self._db.read() as tx:
            row = tx.one("SELECT * FROM instances WHERE heartbeat_at >= ? AND room > 0 "
                         "ORDER BY harvest DESC, id LIMIT 1", (tx.now() - max_age_s,))
        return None if row is None else dict(row)

    def succeeded_adapters(self, after_seq: int = 0) -> list[Adapter]:
        """Adapters of jobs that succeeded after the one numbered ``after_seq``, in that order."""
        rows = self._all("SELECT succeeded_seq, fine_tuned_model, id, suffix FROM jobs "
                         "WHERE succeeded_seq > ? ORDER BY succeeded_seq", (int(after_seq),))
        return [_adapter(r) for r in rows]

    def adapter_named(self, fine_tuned_model: str) -> Adapter | None:
        """The succeeded adapter called ``fine_tuned_model``, if any job of the fleet made it."""
        row = self._one("SELECT succeeded_seq, fine_tuned_model, id, suffix FROM jobs "
                        "WHERE fine_tuned_model = ? AND succeeded_seq IS NOT NULL", (fine_tuned_model,))
        return None if row is None else _adapter(row)

    def listen_adapters(self, timeout_s: float) -> list[str]:
        """Wait up to ``timeout_s`` for jobs to succeed; the new adapters' names (maybe none).

        A wake-up call only: poll :meth:`succeeded_adapters` afterwards, which is
        the record. On SQLite (one instance, nobody else to hear from) it just waits.
        """
        return self._db.wait_notify(ADAPTERS_CHANNEL, timeout_s)


def _adapter(row) -> Adapter:
    return Adapter(int(row["succeeded_seq"]), row["fine_tuned_model"], row["id"], row["suffix"])
