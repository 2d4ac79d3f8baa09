"""Durable timers: Redis sorted sets scored by due time, claimed with a lease.

Timers are sharded over a fixed number of keys (by contact) so that several
schedulers can claim in parallel without coordinating. A claim moves a timer to
the shard's lease set atomically (Lua); the message that carries it releases the
lease when the step is done. A claim whose worker dies is handed out again when
its lease ends. Workers never hold pending timers in memory: a timer is only in
Dramatiq once it is due.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

from automation.runtime import Runtime
from automation.store.keys import shard_key_of
from automation.store.scripts import Scripts


@dataclass(frozen=True)
class Claim:
    member: str
    due: float
    #: The claim's token: the wall-clock end of its first lease (the lease may be extended since);
    #: None when not claimed from Redis.
    lease: float | None = None

    def to_wire(self) -> list:
        return [self.member, self.due, self.lease]

    @classmethod
    def from_wire(cls, data: list) -> "Claim":
        member, due, lease = data
        return cls(str(member), float(due), None if lease is None else float(lease))


class TimerStore:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.redis = runtime.redis
        self.keys = runtime.keys
        self.scripts = Scripts(runtime.redis)

    def schedule(self, contact_id: str, member: str, due: float) -> None:
        """Add or move a timer (ZADD overwrites: scheduling again is rescheduling)."""
        self.redis.zadd(self.keys.timers_for(contact_id), {member: due})

    def schedule_many(self, items: Iterable[tuple[str, str, float]], chunk: int = 5000) -> int:
        """Pipelined schedule of (contact id, member, due) triples."""
        count = 0
        pipe = self.redis.pipeline(transaction=False)
        for contact_id, member, due in items:
            pipe.zadd(self.keys.timers_for(contact_id), {member: due})
            count += 1
            if count % chunk == 0:
                pipe.execute()
        pipe.execute()
        return count

    def cancel(self, contact_id: str, member: str) -> bool:
        return bool(self.redis.zrem(self.keys.timers_for(contact_id), member))

    def due_time(self, contact_id: str, member: str) -> float | None:
        score = self.redis.zscore(self.keys.timers_for(contact_id), member)
        return None if score is None else float(score)

    def claim(self, limit_per_shard: int, lease_seconds: float | None = None) -> tuple[list[Claim], int]:
        """Claim due timers from every shard in one round trip; also returns expired leases reclaimed.

        The lease is short (`claim_lease_seconds`) until `extend` says the claims are safely queued.
        """
        now = self.runtime.clock.now()
        wall = time.time()
        lease_end = wall + (self.runtime.settings.claim_lease_seconds if lease_seconds is None else lease_seconds)
        args = [repr(now), repr(wall), repr(lease_end), limit_per_shard]
        calls = [("claim", [self.keys.timers(shard), self.keys.leases(shard), self.keys.lease_tokens(shard)], args)
                 for shard in range(self.keys.shards)]
        claims: list[Claim] = []
        reclaimed = 0
        for flat, expired in self.scripts.run(calls):
            reclaimed += int(expired)
            for i in range(0, len(flat), 2):
                claims.append(Claim(flat[i], float(flat[i + 1]), lease_end))
        claims.sort(key=lambda c: c.due)
        return claims, reclaimed

    def ack(self, claims: Iterable[Claim]) -> None:
        """Release claims that needed no work (the lease only, and only if still theirs)."""
        calls = []
        for claim in claims:
            if claim.lease is not None:
                owner = shard_key_of(claim.member)
                calls.append(("ack", [self.keys.leases_for(owner), self.keys.lease_tokens_for(owner)],
                              [claim.member, repr(claim.lease)]))
        self.scripts.run(calls)

    def extend(self, claims: Iterable[Claim], lease_seconds: float) -> int:
        """Extend the leases of claims still held (each by its token) to `lease_seconds` from now."""
        by_shard: dict[int, list[str]] = {}
        for claim in claims:
            if claim.lease is not None:
                shard = self.keys.shard_of(shard_key_of(claim.member))
                by_shard.setdefault(shard, []).extend((claim.member, repr(claim.lease)))
        end = repr(time.time() + lease_seconds)
        calls = [("extend", [self.keys.leases(shard), self.keys.lease_tokens(shard)], [end, *pairs])
                 for shard, pairs in by_shard.items()]
        return sum(int(n) for n in self.scripts.run(calls))

    def counts(self) -> dict[str, int]:
        """Pending and leased timers over all shards."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            pipe.zcard(self.keys.timers(shard))
            pipe.zcard(self.keys.leases(shard))
        replies = pipe.execute()
        return {"pending": sum(replies[0::2]), "leased": sum(replies[1::2])}

    def next_due(self) -> float | None:
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            pipe.zrange(self.keys.timers(shard), 0, 0, withscores=True)
        scores = [entry[0][1] for entry in pipe.execute() if entry]
        return min(scores) if scores else None
