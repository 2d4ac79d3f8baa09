"""Redis key layout. One place names every key, so docs/architecture.md can list them.

Timer members are short strings (`s|<journey>|<contact>` for a run's next step,
`r|<contact>` for re-evaluating a contact, `b|<journey>` for a scheduled broadcast,
`b|<journey>|<id>` for a one-off broadcast)
because memory per pending timer is what limits how many contacts one Redis can hold.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    namespace: str
    shards: int

    def contact(self, contact_id: str) -> str:
        return f"{self.namespace}:c:{contact_id}"

    def recent_events(self, contact_id: str) -> str:
        return f"{self.namespace}:ev:{contact_id}"

    def ledger(self, contact_id: str) -> str:
        return f"{self.namespace}:m:{contact_id}"

    def inbox(self, contact_id: str) -> str:
        """Events and attribute changes some journey reacts to, until the contact's next evaluation."""
        return f"{self.namespace}:in:{contact_id}"

    @property
    def watched_events(self) -> str:
        """Names of the events journeys react to (triggers, wait_for, goals, exits, scores), and
        WATCH_PUBLISHED once a worker has published them: until then every event is kept."""
        return f"{self.namespace}:watch:events"

    @property
    def watched_attributes(self) -> str:
        """Names of the contact attributes attribute-change triggers watch, and WATCH_PUBLISHED (as above)."""
        return f"{self.namespace}:watch:attributes"

    def broadcast(self, journey: str, one_off: str = "") -> str:
        """Progress of a scheduled journey's broadcast (schedule, occurrence, scan cursor), or of
        one one-off broadcast of a journey (when, local time, state, scan cursor)."""
        return f"{self.namespace}:bc:{journey}:{one_off}" if one_off else f"{self.namespace}:bc:{journey}"

    @property
    def one_off_broadcasts(self) -> str:
        """One-off broadcasts (`<journey>|<id>`), scored by when they go (journey clock)."""
        return f"{self.namespace}:broadcasts"

    def shard_of(self, contact_id: str) -> int:
        return zlib.crc32(contact_id.encode()) % self.shards

    def timers(self, shard: int) -> str:
        return f"{self.namespace}:t:{shard}"

    def leases(self, shard: int) -> str:
        return f"{self.namespace}:l:{shard}"

    def lease_tokens(self, shard: int) -> str:
        """Claimed timer -> the token of the claim holding it (a lease can be extended, its claim stays)."""
        return f"{self.namespace}:lt:{shard}"

    def timers_for(self, contact_id: str) -> str:
        return self.timers(self.shard_of(contact_id))

    def leases_for(self, contact_id: str) -> str:
        return self.leases(self.shard_of(contact_id))

    def lease_tokens_for(self, contact_id: str) -> str:
        return self.lease_tokens(self.shard_of(contact_id))

    def event_id(self, event_id: str) -> str:
        return f"{self.namespace}:eid:{event_id}"

    def phone_index(self, phone: str) -> str:
        """Phone number -> contact id, for inbound SMS (STOP, START, HELP).

        Spread over 8,192 small hashes: up to about a million contacts each stays under 128
        entries, in Redis's compact encoding, so an entry costs about 30 bytes instead of about
        100 in one big hash.
        """
        return f"{self.namespace}:idx:phone:{zlib.crc32(phone.encode()) % PHONE_BUCKETS}"

    def coupon(self, normalized_code: str) -> str:
        """One issued coupon code (without its dash): holder, value, expiry, redemption."""
        return f"{self.namespace}:coupon:{normalized_code}"

    def rate_window(self, adapter: str, window: int) -> str:
        """Messages an adapter sent in one rate-limit window."""
        return f"{self.namespace}:rate:{adapter}:{window}"

    @property
    def paused(self) -> str:
        """Channels paused because a provider refused our credentials."""
        return f"{self.namespace}:paused"

    def suppressed(self, channel: str) -> str:
        """A channel's suppression list: address -> why and since when."""
        return f"{self.namespace}:sup:{channel}"

    def seen(self, provider: str, report_id: str) -> str:
        """A provider's webhook event already handled (providers deliver at least once)."""
        return f"{self.namespace}:seen:{provider}:{report_id}"

    def api_key(self, digest: str) -> str:
        """One write key, by the SHA-256 of the key (the key itself is never stored): scope, name, id."""
        return f"{self.namespace}:key:{digest}"

    @property
    def api_keys(self) -> str:
        """Key id -> the SHA-256 of the key, for listing and revoking keys by id."""
        return f"{self.namespace}:keys"

    def anonymous(self, anonymous_id: str) -> str:
        """What an anonymous visitor did (events, traits) before being identified, as JSON lines."""
        return f"{self.namespace}:anon:{anonymous_id}"

    def alias(self, anonymous_id: str) -> str:
        """The contact an anonymous id was linked to (by identify or alias)."""
        return f"{self.namespace}:alias:{anonymous_id}"

    @property
    def liveness(self) -> str:
        """Worker id -> the wall-clock time it last showed life (a mark, a heartbeat)."""
        return f"{self.namespace}:alive"

    @property
    def ambiguous(self) -> str:
        """Steps a crash left in doubt (`<contact>|<ledger field>`), scored by when they fell into doubt
        (journey clock)."""
        return f"{self.namespace}:ambiguous"

    @property
    def waves(self) -> str:
        """Waves of provider requests in progress: token -> the worker making them."""
        return f"{self.namespace}:waves"

    @property
    def activity(self) -> str:
        return f"{self.namespace}:activity"

    @property
    def stats(self) -> str:
        return f"{self.namespace}:stats"

    @property
    def meta(self) -> str:
        return f"{self.namespace}:meta"

    @property
    def deployed(self) -> str:
        """Journey -> the version workers serve (`store/versions.py`)."""
        return f"{self.namespace}:jv"

    def versions(self, journey: str) -> str:
        """A journey's deployed versions, newest first (JSON records)."""
        return f"{self.namespace}:jv:{journey}"

    def version_source(self, journey: str, version: str) -> str:
        """The source text of one version of a journey file."""
        return f"{self.namespace}:js:{journey}:{version}"

    @property
    def deploying(self) -> str:
        """Held while a deploy moves runs (its owner), so two never interleave."""
        return f"{self.namespace}:deploying"

    @property
    def contact_pattern(self) -> str:
        return f"{self.namespace}:c:*"

    @property
    def everything(self) -> str:
        """Every key of this namespace (a SCAN pattern: a throwaway namespace is removed with it)."""
        return f"{self.namespace}:*"


PHONE_BUCKETS = 8192

#: The member a worker adds to both watch sets when it publishes them (no event or attribute has
#: an empty name): an empty set means "not published yet", and then every event and attribute
#: change waits in the inbox, so events sent before any worker ever ran still start journeys.
WATCH_PUBLISHED = ""

#: Entries kept in the activity stream (`<ns>:activity`), approximately.
ACTIVITY_LENGTH = 100_000


def seconds(timestamp: float) -> str:
    """A time kept in a contact hash: whole seconds, which Redis stores as a 5-byte integer."""
    return str(int(timestamp))


def due(timestamp: float) -> str:
    """A due time, to the millisecond, the same value in the timer's score and the contact hash.

    Rounded down: a step due now must be due now, not half a millisecond from now.
    """
    return repr(math.floor(timestamp * 1000) / 1000)


# Counters in the stats hash (`<ns>:stats`) per journey, stage, step, split and day, which `lifecycle
# status` and `lifecycle report` read back (the plain ones are named where they are counted:
# `sent`, `sent:email`, `skipped:<reason>` ...).

def step_stat(journey: str, scope: str, step: str, outcome: str) -> str:
    """Outcomes of a step (`sent`, `skipped`, `failed`)."""
    return f"step:{journey}:{scope}:{step}:{outcome}"


def enter_stat(journey: str, scope: str) -> str:
    """Runs of a journey's stage (or `run`) started."""
    return f"enter:{journey}:{scope}"


def goal_stat(journey: str, scope: str, what: str = "") -> str:
    """A goal's runs `entered` and `converted` (`goal:<journey>:<scope>:<what>`); with no `what`, the prefix."""
    return f"goal:{journey}:{scope}:{what}"


def split_stat(journey: str, split: str, variant: str = "", what: str = "") -> str:
    """A split variant's runs `entered` and `converted`; with no `what` (and no variant), the prefix."""
    return f"split:{journey}:{split}:{variant}:{what}" if variant else f"split:{journey}:{split}:"


def step_reason_stat(journey: str, scope: str, step: str, code: str) -> str:
    """Steps skipped or failed for this reason code (no_consent, invalid_number ...)."""
    return f"reason:{journey}:{scope}:{step}:{code}"


def step_delivery_prefix(journey: str, scope: str, step: str) -> str:
    """Messages of a step a provider reported in each status (`<prefix><status>`: delivered,
    opened, clicked, bounced ...), each message counted once per status."""
    return f"dstep:{journey}:{scope}:{step}:"


def sent_day_stat(day: str, channel: str) -> str:
    """Messages sent on a day (`YYYY-MM-DD`, UTC, on the journey clock) on a channel."""
    return f"day:{day}:{channel}"


#: Timer member kinds: a run's next step, a contact's re-evaluation, a broadcast.
STEP, RECHECK, BROADCAST = "s", "r", "b"


def step_member(journey: str, contact_id: str) -> str:
    return f"{STEP}|{journey}|{contact_id}"


def recheck_member(contact_id: str) -> str:
    return f"{RECHECK}|{contact_id}"


def broadcast_member(journey: str, one_off: str = "") -> str:
    """The timer of a scheduled journey's next broadcast, or of a one-off broadcast (sharded by the
    journey name)."""
    return f"{BROADCAST}|{journey}|{one_off}" if one_off else f"{BROADCAST}|{journey}"


def parse_member(member: str) -> tuple[str, str | None, str]:
    """(kind, journey or None, contact id) from a timer member; for a broadcast, (kind, journey,
    one-off id), the id "" for a scheduled journey's."""
    kind, _, rest = member.partition("|")
    if kind == STEP:
        journey, _, contact_id = rest.partition("|")
        return kind, journey, contact_id
    if kind == BROADCAST:
        journey, _, one_off = rest.partition("|")
        return kind, journey, one_off
    return kind, None, rest


def shard_key_of(member: str) -> str:
    """What decides a timer's shard: its contact, or a broadcast's journey."""
    kind, journey, contact_id = parse_member(member)
    return journey or "" if kind == BROADCAST else contact_id
