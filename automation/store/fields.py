"""The contact hash: the name of every field and how its value is encoded.

One hash per contact (`<ns>:c:<contact>`) holds everything a rule needs, so evaluating a
contact is one HGETALL. This module is the one place that knows its layout; Python code
reads and writes fields through it, and the Lua scripts that write the hash atomically
follow the same layout (`identify.lua` writes attributes, `record_event.lua` event stats,
both the version and creation time; `record_step.lua` and `apply.lua` get every field name
from Python).

    a:<attribute>      JSON value; nested attributes flattened: a:consent.email
    e:<event>          "count,first,last" (times in whole epoch seconds)
    j:<journey>:<part> a journey's run, one field per part (RUN_PARTS):
                         st  the run in progress: its stage, or "run" for a triggered journey
                         oc  runs so far          in  when the latest started
                         sp  the step it waits at du  when that is due (ms, as the timer's score)
                         g   "deadline|scope" while a conversion of the latest run still counts
                         ab  its split variants, "split=variant,..."
                         cw  "1" while a `when` trigger's rule holds
                         bt  the last broadcast occurrence it took part in
                         en  "time|why" of the latest run's end
                         on  the `once` steps done, over all runs: "tag,tag,..." (once_tag)
                         vr  the journey version the run's step ids belong to (12 hex digits)
    s:<score>          "value,at": a lead score's value at a moment (whole epoch seconds)
    k:<coupon>         "CODE|issued|expires|run-tag|value": the contact's coupon of that name
    f:<channel>        "t1,t2,...": when the latest marketing messages on a channel were marked for
                       sending, oldest first (journey clock, whole seconds), as many as its largest
                       frequency cap counts; f:* the same for every marketing message (mark.lua)
    v                  version, bumped by every change an evaluation must not miss
    ct                 created at

Field layouts are chosen for memory: Redis keeps small hashes (every value at most 64
bytes) in a compact encoding in which integers take 5 bytes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Mapping

ATTRIBUTE = "a:"
EVENT = "e:"
RUN = "j:"
SCORE = "s:"
COUPON = "k:"
FREQUENCY = "f:"
VERSION = "v"
CREATED = "ct"

#: The parts of a journey's run fields (`j:<journey>:<part>`).
RUN_PARTS = ("st", "oc", "in", "sp", "du", "g", "ab", "cw", "bt", "en", "on", "vr")
#: Redis keeps a hash compact only while every value is at most this long.
MAX_FIELD_BYTES = 64


def attribute(name: str) -> str:
    return ATTRIBUTE + name


def event(name: str) -> str:
    return EVENT + name


def run(journey: str, part: str) -> str:
    return f"{RUN}{journey}:{part}"


def score(name: str) -> str:
    return SCORE + name


def coupon(name: str) -> str:
    return COUPON + name


def frequency(channel: str | None) -> str:
    """The send times a frequency cap counts: one channel's, or (None) every marketing message's."""
    return FREQUENCY + (channel or "*")


def decode_frequency(raw: str | None) -> list[float]:
    return [float(value) for value in (raw or "").split(",") if value]


def split(field: str) -> tuple[str, str]:
    """(kind prefix, rest) of a field name: ("a:", "consent.email"), ("j:", "journey:st"); every
    prefix is two characters, so `field[:2], field[2:]` does the same where speed matters."""
    return field[:2], field[2:]


# -- events ---------------------------------------------------------------------------------------

def decode_event(raw: str) -> tuple[int, float, float]:
    """(count, first, last) of an `e:` field."""
    count, first, last = raw.split(",")
    return int(count), float(first), float(last)


# -- runs -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Enrollment:
    """A journey's run fields, decoded."""

    stage: str | None = None            # the scope of the run in progress: a stage name, or "run"
    occurrence: int = 0
    entered_at: float | None = None
    step: str | None = None
    due: float | None = None
    goal: str | None = None             # "deadline|scope" while a conversion still counts
    variants: str | None = None         # "split=variant,..."
    condition: bool = False             # a `when` trigger's rule held at the last evaluation
    broadcast: str | None = None        # the last broadcast occurrence taken part in
    ended: str | None = None            # "time|why" of the latest run's end
    once: str | None = None             # the `once` steps done, over all runs (once_tag, comma-separated)
    version: str | None = None          # the journey version its step ids belong to

    @property
    def assignments(self) -> dict[str, str]:
        """The split variants this run was assigned, by split name."""
        return decode_variants(self.variants)

    @property
    def goal_deadline(self) -> tuple[float, str] | None:
        """(deadline, scope) while a conversion of the latest run still counts."""
        if not self.goal:
            return None
        deadline, _, scope = self.goal.partition("|")
        return float(deadline), scope

    @property
    def end(self) -> tuple[float, str] | None:
        """(time, why) the latest run ended, if it did."""
        if not self.ended:
            return None
        at, _, why = self.ended.partition("|")
        return float(at), why


def enrollment_of(parts: Mapping[str, str]) -> Enrollment:
    """An Enrollment from the parts of one journey (`st`, `oc` ... without the `j:<journey>:` prefix)."""
    return Enrollment(
        stage=parts.get("st"),
        occurrence=int(parts.get("oc", 0)),
        entered_at=float(parts["in"]) if "in" in parts else None,
        step=parts.get("sp"),
        due=float(parts["du"]) if "du" in parts else None,
        goal=parts.get("g"),
        variants=parts.get("ab"),
        condition=parts.get("cw") == "1",
        broadcast=parts.get("bt"),
        ended=parts.get("en"),
        once=parts.get("on"),
        version=parts.get("vr"),
    )


def enrollment_from_hash(raw: Mapping[str, str], journey: str) -> Enrollment:
    prefix = run(journey, "")
    return enrollment_of({part: raw[prefix + part] for part in RUN_PARTS if prefix + part in raw})


def encode_goal(deadline: float, scope: str) -> str:
    return f"{int(deadline)}|{scope}"


def encode_end(at: float, why: str) -> str:
    # Kept short: the field must fit the compact hash encoding.
    return f"{int(at)}|{why[:40]}"


def decode_variants(raw: str | None) -> dict[str, str]:
    return dict(item.split("=", 1) for item in (raw or "").split(",") if "=" in item)


def encode_variants(assignments: Mapping[str, str]) -> str | None:
    return ",".join(f"{k}={v}" for k, v in sorted(assignments.items())) or None


def once_tag(scope: str, step: str) -> str:
    """A `once` step's short tag: CRC32 of stage and step id in base 36 (at most 7 characters), so
    about eight of them keep the field inside the compact encoding. Two steps of a journey would have
    to collide (odds of 1 in 4 billion per pair) for one to count as the other."""
    value = zlib.crc32(f"{scope}/{step}".encode())
    digits = ""
    while True:
        value, digit = divmod(value, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
        if not value:
            return digits


def once_done(raw: str | None, tag: str) -> bool:
    return tag in (raw or "").split(",")


def add_once(raw: str | None, tags: list[str]) -> str:
    done = [tag for tag in (raw or "").split(",") if tag]
    return ",".join(done + [tag for tag in dict.fromkeys(tags) if tag not in done])


# -- scores ---------------------------------------------------------------------------------------

def encode_score(value: float, at: float) -> str:
    return f"{round(value, 4):g},{int(at)}"


def decode_score(raw: str | None) -> tuple[float, float]:
    if not raw:
        return 0.0, 0.0
    value, _, at = raw.partition(",")
    return float(value), float(at or 0)


# -- coupons --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CouponField:
    """The `k:<name>` field: a contact's coupon of one name, compact."""

    code: str
    issued: int
    expires: int | None
    run_tag: str            # stands for the journey run that issued it (automation.store.coupons.run_hash)
    value: str              # "p20" (percent) or "a12.5EUR" (amount and currency); "" when it did not fit

    def encode(self) -> str:
        """The value part is left out (read from the per-code hash) if the whole does not fit."""
        head = f"{self.code}|{self.issued}|{'' if self.expires is None else self.expires}|{self.run_tag}"
        full = f"{head}|{self.value}"
        return full if len(full.encode()) <= MAX_FIELD_BYTES else head

    @classmethod
    def decode(cls, raw: str) -> "CouponField":
        code, issued, expires, run_tag, *rest = raw.split("|")
        return cls(code, int(float(issued or 0)), int(float(expires)) if expires else None, run_tag,
                   rest[0] if rest else "")
