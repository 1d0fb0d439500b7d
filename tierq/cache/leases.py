"""Leader leases: a follower waits on a leader job only while that job's worker keeps renewing its lease."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from tierq.cache.layout import Layout


class Leases:
    """The leases (P:l:<job>) of the leader jobs being answered."""

    def __init__(self, client: redis.Redis, layout: Layout, lease_s: float) -> None:
        self.r = client
        self.layout = layout
        self.lease_s = lease_s

    def renew(self, job_ids: Sequence[int]) -> None:
        """Tell followers these leaders are alive for another `lease_s`."""
        pipe = self.r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.set(self.layout.lease(job_id), 1, px=int(self.lease_s * 1000))
        pipe.execute()

    def alive(self, job_id: int) -> bool:
        """True while the leader's worker keeps renewing its lease."""
        return bool(self.r.exists(self.layout.lease(job_id)))
