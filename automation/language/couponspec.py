"""What a journey's `coupon:` step asks for: a name, a value, an expiry and a code prefix.

Checked when the journey loads, so a bad coupon is a `file:line:col` error, never a failed send;
automation.store.coupons issues the codes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from automation.durations import parse_duration

#: Longer than this a coupon is as good as permanent: leave `expires` out instead. It also bounds
#: the expiry time to 11 digits, which the compact contact field's size budget counts on.
MAX_EXPIRES = 10 * 365 * 86400.0
SPEC_KEYS = ("name", "percent", "amount", "currency", "expires", "prefix")

NAME_PATTERN = re.compile(r"^[a-z0-9_-]{1,32}$")
_PREFIX = re.compile(r"^[A-Z0-9]{0,8}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class CouponSpec:
    """What a journey step asks for; checked when built, so a bad journey fails at load time."""

    name: str
    percent: float | None = None
    amount: float | None = None
    currency: str | None = None
    expires: float | None = None
    prefix: str = ""

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise ValueError(f"coupon name {name!r} must be 1-32 lowercase letters, digits, '-' or '_'")
        percent = _number(self.percent, "percent")
        amount = _number(self.amount, "amount")
        if percent is not None and amount is not None:
            raise ValueError(f"coupon {name!r}: give either percent or amount, not both")
        if percent is None and amount is None:
            raise ValueError(f"coupon {name!r} needs a percent (e.g. percent: 20) or an amount with a currency "
                             "(e.g. amount: 10, currency: EUR)")
        if percent is not None and not 0 < percent <= 100:
            raise ValueError(f"coupon {name!r}: percent must be more than 0 and at most 100, not {percent:g}")
        if amount is not None and amount <= 0:
            raise ValueError(f"coupon {name!r}: amount must be more than 0, not {amount:g}")
        currency = self.currency
        if currency is not None:
            if amount is None:
                raise ValueError(f"coupon {name!r}: currency goes with an amount, not with a percent")
            if not isinstance(currency, str) or not _CURRENCY.match(currency.strip().upper()):
                raise ValueError(f"coupon {name!r}: currency {currency!r} must be a 3-letter code such as EUR")
            currency = currency.strip().upper()
        elif amount is not None:
            raise ValueError(f"coupon {name!r}: an amount needs a currency (e.g. currency: EUR)")
        expires = _number(self.expires, "expires")
        if expires is not None and not 0 < expires <= MAX_EXPIRES:
            raise ValueError(f"coupon {name!r}: expires must be more than 0 and at most 10 years; "
                             "leave it out for a coupon that does not expire")
        prefix = self.prefix
        if not isinstance(prefix, str) or not _PREFIX.match(prefix.strip().upper()):
            raise ValueError(f"coupon {name!r}: prefix {prefix!r} must be at most 8 letters or digits")
        # Normalized in place (frozen dataclass): ints become floats, codes uppercase.
        object.__setattr__(self, "percent", percent)
        object.__setattr__(self, "amount", amount)
        object.__setattr__(self, "currency", currency)
        object.__setattr__(self, "expires", expires)
        object.__setattr__(self, "prefix", prefix.strip().upper())


def _number(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"coupon {what} must be a number, not {value!r}")
    return float(value)


def check_spec(data: Mapping[str, Any]) -> CouponSpec:
    """The spec of a journey step's `coupon:` mapping, or ValueError saying what is wrong.

    `expires` normally arrives as seconds from the journey loader; a duration string (`14d`) is
    accepted too, so the spec can be checked on its own.
    """
    if not isinstance(data, Mapping):
        raise ValueError("coupon must be a mapping such as {name: winback, percent: 20, expires: 14d}")
    unknown = sorted(str(key) for key in data if key not in SPEC_KEYS)
    if unknown:
        raise ValueError(f"coupon: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SPEC_KEYS)}")
    if data.get("name") is None:
        raise ValueError("coupon needs a name, e.g. name: winback")
    expires = data.get("expires")
    if isinstance(expires, str):
        expires = parse_duration(expires)  # DurationError is a ValueError
    prefix = data.get("prefix")
    return CouponSpec(
        name=data["name"],
        percent=data.get("percent"),
        amount=data.get("amount"),
        currency=data.get("currency"),
        expires=expires,
        prefix="" if prefix is None else prefix,
    )
