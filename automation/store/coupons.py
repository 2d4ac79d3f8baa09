"""Coupons: a unique code per contact, issued by a journey step, shown by templates, redeemed once.

A journey step asks for `coupon: {name: winback, percent: 20, expires: 14d}`. The contact gets a
random code (`WB-7KQ9XP3MA2`) that no contact ever had or will have, whatever the coupon's name,
so a code alone identifies its holder when it comes back with a purchase.

Where it lives in Redis:

    <ns>:c:<contact>    field k:<name> (automation.store.fields.CouponField): the contact's current
                        coupon of that name, compact, because the contact hash must stay in Redis's
                        small encoding. Its value part ("p20": percent, "a12.5EUR": amount and
                        currency) is left out when it does not fit, and then read from the per-code
                        hash.
    <ns>:coupon:<CODE>  per-code hash, CODE without its dash: code, name, contact, run, issued,
                        expires, percent | amount + currency; after a redemption: redeemed,
                        redeemed_by, redeemed_source, redeemed_status, late, refused. Never deleted:
                        it is the reservation that keeps the code unique forever.
    <ns>:stats          coupon:<name>:issued, :redeemed, :late, :other_contact, :already_redeemed,
                        :collisions, and coupon:unknown_code

Times are whole epoch seconds, like every time in the contact hash.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
from dataclasses import dataclass
from typing import Any, Mapping

from automation.errors import CouponError
from automation.events import check_contact_id
from automation.expressions import to_datetime
from automation.language.couponspec import CouponSpec
from automation.runtime import Runtime
from automation.store import fields
from automation.store.fields import CouponField
from automation.store.keys import Keys, seconds
from automation.store.scripts import Scripts

#: Code characters: digits and capitals without the ones customers misread (0/O, 1/I/L).
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
#: 31**10, about 8e14 codes: collisions stay rare even after hundreds of millions of coupons.
CODE_LENGTH = 10
_TYPED = re.compile(r"[\s\-]+")
_NORMALIZED = re.compile(rf"^[A-Z0-9]{{{CODE_LENGTH},{CODE_LENGTH + 8}}}$")


@dataclass(frozen=True)
class Coupon:
    """A coupon as issued to a contact; times in whole epoch seconds."""

    name: str
    code: str
    percent: float | None
    amount: float | None
    currency: str | None
    issued_at: float
    expires_at: float | None

    def as_template_value(self) -> dict[str, Any]:
        """What a template sees as `coupons.<name>`: times as aware (UTC) datetimes, like every time in
        the template context, so `format_date` and the contact's timezone apply to them."""
        return {
            "code": self.code,
            "percent": self.percent,
            "amount": self.amount,
            "currency": self.currency,
            "expires": to_datetime(self.expires_at),
            "issued": to_datetime(self.issued_at),
        }


@dataclass(frozen=True)
class Redemption:
    """The outcome of `CouponStore.redeem`.

    `contact_id` is the coupon's holder (None for an unknown code), so a purchase can be attributed
    to the contact who was sent the coupon. `at` is the time of the redemption on record: for
    "already_redeemed", that of the first redemption, which is the one that counts.
    """

    status: str  # "redeemed", "already_redeemed", "unknown_code", "expired" (recorded), "other_contact" (recorded)
    code: str
    name: str | None
    contact_id: str | None
    at: float


def normalize_code(code: str) -> str:
    """A code as typed by a customer (`wb-7kq9 xp3m a2`) in the form codes are keyed by (`WB7KQ9XP3MA2`)."""
    return _TYPED.sub("", code).upper()


def coupon_key(keys: Keys, code: str) -> str:
    """Key of a code's hash (the code without dash: what customers type is compared in that form)."""
    return keys.coupon(normalize_code(code))


def new_code(rng: random.Random, prefix: str = "") -> str:
    """A random code, `PREFIX-XXXXXXXXXX` or `XXXXXXXXXX`."""
    body = "".join(rng.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return f"{prefix}-{body}" if prefix else body


def run_hash(run: str) -> str:
    """8 characters (40 bits) standing for a journey run in the compact field: telling one run of a
    contact from the next needs no more, and the run itself can be long."""
    return base64.b32encode(hashlib.sha1(run.encode()).digest()[:5]).decode()


def _text(number: float) -> str:
    """Shortest exact text of a number: 20.0 -> "20", 12.5 -> "12.5"."""
    text = repr(float(number))
    return text[:-2] if text.endswith(".0") else text


def _value_part(percent: float | None, amount: float | None, currency: str | None) -> str:
    if percent is not None:
        return f"p{_text(percent)}"
    return f"a{_text(amount or 0.0)}{currency or ''}"


def coupon_of(name: str, stored: CouponField) -> Coupon | None:
    """A coupon from its compact contact field; None if the value part was left out (see coupons_of)."""
    value = stored.value
    if not value:
        return None
    percent = amount = None
    currency = None
    if value[0] == "p":
        percent = float(value[1:])
    else:
        amount, currency = float(value[1:-3]), value[-3:]
    return Coupon(name, stored.code, percent, amount, currency, float(stored.issued),
                  float(stored.expires) if stored.expires is not None else None)


def parse_compact(name: str, raw: str) -> Coupon | None:
    return coupon_of(name, CouponField.decode(raw))


def issued_in_run(raw_fields: Mapping[str, str], run: str) -> str | None:
    """The name of the coupon a journey run issued last (templates show it as `coupon`), if any."""
    tag = run_hash(run)
    found: tuple[float, str] | None = None
    for field, raw in raw_fields.items():
        kind, name = fields.split(field)
        if kind == fields.COUPON:
            stored = CouponField.decode(raw)
            if stored.run_tag == tag:
                candidate = (float(stored.issued), name)
                found = max(found, candidate) if found else candidate
    return found[1] if found else None


class CouponStore:
    """Issues, lists and redeems coupons.

    `rng` makes codes reproducible in tests; the default draws from the operating system, because
    a code is worth money and must not be guessable from other codes. `attempts` bounds the retries
    when a drawn code is taken.
    """

    def __init__(self, runtime: Runtime, rng: random.Random | None = None, attempts: int = 10) -> None:
        self.runtime = runtime
        self.redis = runtime.redis
        self.keys = runtime.keys
        self.scripts = Scripts(runtime.redis)
        self.rng = rng if rng is not None else random.SystemRandom()
        self.attempts = attempts

    def issue(self, contact_id: str, spec: CouponSpec, run: str, now: float) -> Coupon:
        """The contact's coupon for this journey run, issued now if the run has none yet.

        Idempotent per (contact, spec.name, run), so a redelivered message gets the coupon the
        first delivery issued (and emailed); a later run of the journey gets a new code. Reserving
        the code and storing it on the contact happen in one script: a crash between the two cannot
        leave a reserved code with no holder, nor two codes for one run. Raises LookupError for a
        contact that does not exist (a coupon must not create one), CouponError if no free code is
        found in `attempts` draws.
        """
        contact_id = check_contact_id(contact_id)
        if not run:
            raise ValueError("run must identify the journey run asking for the coupon")
        issued = int(seconds(now))
        expires_at = int(seconds(issued + spec.expires)) if spec.expires is not None else None
        tag = run_hash(run)
        value = _value_part(spec.percent, spec.amount, spec.currency)
        field = fields.coupon(spec.name)
        for _ in range(self.attempts):
            code = new_code(self.rng, spec.prefix)
            compact = CouponField(code, issued, expires_at, tag, value).encode()
            keys = [self.keys.contact(contact_id), coupon_key(self.keys, code), self.keys.stats]
            args = [field, tag, compact, spec.name, contact_id, run, code, issued,
                    "" if expires_at is None else expires_at,
                    "" if spec.percent is None else _text(spec.percent),
                    "" if spec.amount is None else _text(spec.amount),
                    spec.currency or ""]
            status, stored = self.scripts.call("coupon_issue", keys, args)
            if status in ("issued", "existing"):
                coupon = parse_compact(spec.name, stored)
                return coupon if coupon is not None else self._complete({spec.name: stored})[spec.name]
            if status == "no_contact":
                raise LookupError(f"contact {contact_id!r} does not exist; no coupon issued")
        raise CouponError(f"no free code for coupon {spec.name!r} after {self.attempts} draws; "
                          "use a prefix to open a new code space")

    def coupons_of(self, contact_id: str, raw_fields: Mapping[str, str] | None = None) -> dict[str, Coupon]:
        """The contact's current coupon of each name, as templates need them.

        `raw_fields` is the contact hash if the caller already loaded it (the engine does, to
        evaluate rules), which saves a round trip. Coupons whose value did not fit in the compact
        field are completed from their per-code hashes in one pipelined round trip.
        """
        if raw_fields is None:
            raw_fields = self.redis.hgetall(self.keys.contact(contact_id))
        coupons: dict[str, Coupon] = {}
        incomplete: dict[str, str] = {}
        for field, raw in raw_fields.items():
            kind, name = fields.split(field)
            if kind != fields.COUPON:
                continue
            coupon = parse_compact(name, raw)
            if coupon is None:
                incomplete[name] = raw
            else:
                coupons[name] = coupon
        if incomplete:
            coupons.update(self._complete(incomplete))
        return dict(sorted(coupons.items()))

    def redeem(self, code: str, contact_id: str | None, at: float, source: str) -> Redemption:
        """Record that a code was used (at checkout: source "purchase", or a "coupon_redeemed" event).

        Atomic, so of two concurrent redemptions exactly one wins. Expired and other-contact
        redemptions are still recorded (the shop accepted them: the business wants to know),
        flagged in the per-code hash and in the stats. `code` is matched the way customers type
        it: any case, with or without spaces and dashes.
        """
        typed = normalize_code(code)
        if not _NORMALIZED.match(typed):
            self.redis.hincrby(self.keys.stats, "coupon:unknown_code", 1)
            return Redemption("unknown_code", typed, None, None, at)
        keys = [self.keys.coupon(typed), self.keys.stats]
        status, stored_code, name, holder, when = self.scripts.call(
            "coupon_redeem", keys, [contact_id or "", repr(float(at)), source])
        if status == "unknown_code":
            return Redemption(status, typed, None, None, at)
        return Redemption(status, stored_code, name, holder, float(when))

    def _complete(self, compact: Mapping[str, str]) -> dict[str, Coupon]:
        stored = {name: CouponField.decode(raw) for name, raw in compact.items()}
        pipe = self.redis.pipeline(transaction=False)
        for field in stored.values():
            pipe.hmget(coupon_key(self.keys, field.code), "percent", "amount", "currency")
        coupons = {}
        for (name, field), (percent, amount, currency) in zip(stored.items(), pipe.execute(), strict=True):
            coupons[name] = Coupon(name, field.code, float(percent) if percent else None,
                                   float(amount) if amount else None, currency or None, float(field.issued),
                                   float(field.expires) if field.expires is not None else None)
        return coupons
