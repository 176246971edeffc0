"""FleetMember: this instance's part in a fleet that shares one job store.

Every harli_sgl instance is a member, a single one included (its fleet is itself,
in SQLite). The member does three things for the job executor, between slots:

* **Heartbeat.** Every ``lease_s / 3`` seconds it writes its row in the store's
  ``instances`` table: its URL, model, the jobs it still has room for, and its
  *harvest*, the compute one more job would get here: the scheduler's free
  compute (idle speed times the share of time decode leaves free, sent as
  :class:`~harli_sgl.core.message.to_worker.FreeCompute`) divided among its running jobs
  plus the new one.
* **Leases.** In the same beat it renews the lease of each job it trains. A
  renewal that fails means the lease was lost (this instance stalled past
  ``lease_s`` and another one took the job over), and the executor drops that job
  at once without writing anything: the store refuses a stale owner's writes too,
  so two instances never both advance a job. It also re-queues any job whose
  owner stopped renewing, so a dead instance's jobs resume elsewhere from their
  checkpoints.
* **Placement.** A queued job is pulled by the live instance with the most
  harvest for one more job. Harvest is a noisy measurement (the idle speed moves
  with whatever else shares the host), so two harvests within a factor of
  ``PLACEMENT_BAND`` count as equal and the instance with more room goes first;
  without the band, an instance measured faster by chance took all four jobs
  of a burst while its twin took none (fleet benchmark, 2026-12-01). An instance
  publishes its row again right after each claim, so the others judge its new
  load, not the one of its last heartbeat. Another instance with room pulls
  only after the queue has waited ``PLACEMENT_GRACE_S`` for the best one, so a
  slow or wedged best instance delays a job by seconds, never strands it. The
  claim itself is the store's ``SELECT ... FOR UPDATE SKIP LOCKED``: placement
  only chooses who tries first, and two instances that both try get different jobs.
"""

from __future__ import annotations

import logging
import time

from harli_sgl.jobs.store import NotFoundError

logger = logging.getLogger(__name__)

PLACEMENT_GRACE_S = 5.0
PLACEMENT_BAND = 1.5  # harvests within this factor of each other count as equal


class FleetMember:
    def __init__(self, store, instance_id: str, url: str, model: str, lease_s: float,
                 clock=time.monotonic) -> None:
        self.store = store
        self.instance_id = instance_id
        self.url = url
        self.model = model
        self.lease_s = lease_s
        self.clock = clock
        self.free_units_per_s: float | None = None
        self._last_beat = float("-inf")
        self._passed_over_since: float | None = None

    def set_free_compute(self, units_per_s: float | None) -> None:
        self.free_units_per_s = units_per_s

    def harvest(self, running: int) -> float:
        """Units per second one more job would get here (0 while unknown)."""
        return (self.free_units_per_s or 0.0) / (running + 1)

    def beat_due(self) -> bool:
        return self.clock() - self._last_beat >= self.lease_s / 3.0

    def beat(self, running: list[str], room: int) -> list[str]:
        """Heartbeat, renew the leases of ``running``, re-queue expired ones elsewhere.

        Returns the jobs whose lease this instance lost: the caller must stop them.
        """
        self._last_beat = self.clock()
        self.publish(len(running), room)
        lost = [job_id for job_id in running if not self._renew(job_id)]
        for job in self.store.requeue_expired_leases():
            logger.warning("job %s: its instance stopped renewing the lease; queued again, "
                           "it resumes from its latest checkpoint", job["id"])
        return lost

    def publish(self, running: int, room: int) -> None:
        """Write this instance's row (harvest for one more job, room) without renewing leases."""
        self.store.heartbeat_instance(self.instance_id, self.url, self.model,
                                      self.harvest(running), room)

    def _renew(self, job_id: str) -> bool:
        try:
            return self.store.renew_lease(job_id, self.instance_id, self.lease_s)
        except NotFoundError:  # no such job any more: nothing to keep training
            return False

    def may_claim(self, running: int, room: int) -> bool:
        """Whether this instance should try to pull a queued job now.

        ``running`` jobs run here and ``room`` more fit. It compares what one more job
        would get here, at this moment, with what the other live instances with room
        last published: another is better placed if its harvest is more than
        ``PLACEMENT_BAND`` times this one's, or if the two are within the band and it
        has more room. So a burst of queued jobs spreads over the fleet instead of
        filling the first instance that polls.
        """
        if room <= 0:
            return False
        mine = self.harvest(running)
        others = [i for i in self.store.live_instances(max_age_s=self.lease_s)
                  if i["id"] != self.instance_id and i["room"] > 0]
        if not any(_better(i["harvest"], i["room"], mine, room) for i in others):
            self._passed_over_since = None
            return True
        now = self.clock()
        if self._passed_over_since is None:
            self._passed_over_since = now
        return now - self._passed_over_since >= PLACEMENT_GRACE_S

    def claimed(self, job: dict | None) -> None:
        """After a claim attempt: the grace period starts over."""
        self._passed_over_since = None


def _better(harvest: float, room: int, mine: float, my_room: int) -> bool:
    """Whether an instance offering (harvest, room) is better placed than this one."""
    if harvest > mine * PLACEMENT_BAND:
        return True
    if mine > harvest * PLACEMENT_BAND:
        return False
    return room > my_room
