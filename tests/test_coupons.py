"""Coupons: one code per contact and journey run, unique forever, small in the contact hash, redeemed once."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timezone

import pytest

from automation.store.contacts import ContactStore
from automation.language.couponspec import CouponSpec, check_spec
from automation.store.coupons import CouponError, CouponStore
from tests.conftest import DAY, ROOT, wait_for

WINBACK = CouponSpec(name="winback", percent=20, expires=14 * DAY, prefix="WB")
#: The documented code alphabet: digits and capitals without 0/O and 1/I/L, which customers misread.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
BODY = rf"[{ALPHABET}]{{10}}"


@pytest.fixture
def contacts(runtime) -> ContactStore:
    return ContactStore(runtime)


@pytest.fixture
def coupons(runtime) -> CouponStore:
    return CouponStore(runtime)


def make_contacts(contacts: ContactStore, ids) -> list[str]:
    ids = list(ids)
    contacts.identify_many((contact_id, {"first_name": "X"}) for contact_id in ids)
    return ids


def stats(runtime) -> dict[str, int]:
    return {k: int(v) for k, v in runtime.redis.hgetall(runtime.keys.stats).items()}


def code_hash(runtime, code: str) -> dict[str, str]:
    """The per-code hash, where the layout documents it: <ns>:coupon:<CODE without its dash>."""
    return runtime.redis.hgetall(f"{runtime.keys.namespace}:coupon:{code.replace('-', '')}")


def coupon_fields(runtime, contact_id: str) -> dict[str, str]:
    raw = runtime.redis.hgetall(runtime.keys.contact(contact_id))
    return {k: v for k, v in raw.items() if k.startswith("k:")}


# --- issuing ---------------------------------------------------------------------------------------------


def test_issue_is_idempotent_per_run(runtime, contacts, coupons, clock):
    # Given a contact in the win-back journey
    make_contacts(contacts, ["ana"])
    # When the step issuing its coupon runs twice for the same run (a redelivered message)
    first = coupons.issue("ana", WINBACK, run="customer-lifecycle:lapsed:1", now=clock.now())
    clock.advance(60)
    again = coupons.issue("ana", WINBACK, run="customer-lifecycle:lapsed:1", now=clock.now())
    # Then both deliveries see the same coupon, issued once
    assert again == first
    assert first.percent == 20 and first.amount is None and first.currency is None
    assert first.issued_at == int(first.issued_at) and first.expires_at == first.issued_at + 14 * DAY
    assert stats(runtime)["coupon:winback:issued"] == 1
    assert coupons.coupons_of("ana") == {"winback": first}


def test_a_new_run_gets_a_new_code_and_the_old_code_stays_valid(runtime, contacts, coupons, clock):
    # Given a contact that got a coupon in its first lapse
    make_contacts(contacts, ["ana"])
    first = coupons.issue("ana", WINBACK, run="customer-lifecycle:lapsed:1", now=clock.now())
    # When it lapses again later and the journey asks again
    clock.advance(100 * DAY)
    second = coupons.issue("ana", WINBACK, run="customer-lifecycle:lapsed:2", now=clock.now())
    # Then it gets a new code, which templates now show
    assert second.code != first.code
    assert second.issued_at > first.issued_at
    assert coupons.coupons_of("ana")["winback"] == second
    assert stats(runtime)["coupon:winback:issued"] == 2
    # And the first code, already emailed, can still be redeemed (late: it expired)
    assert coupons.redeem(first.code, "ana", clock.now(), "purchase").status == "expired"


def test_codes_have_the_prefix_and_the_alphabet(contacts, coupons, clock):
    # Given contacts and coupons with and without a prefix
    ids = make_contacts(contacts, (f"c{i}" for i in range(200)))
    plain = CouponSpec(name="welcome", amount=5, currency="EUR")
    # When codes are issued
    prefixed = [coupons.issue(c, WINBACK, "r1", clock.now()).code for c in ids]
    bare = [coupons.issue(c, plain, "r1", clock.now()).code for c in ids]
    # Then they are PREFIX-<10 characters> or <10 characters>, without 0/O/1/I/L
    assert all(re.fullmatch(rf"WB-{BODY}", code) for code in prefixed), prefixed[:5]
    assert all(re.fullmatch(BODY, code) for code in bare), bare[:5]
    assert not set("01OIL") & set("".join(prefixed + bare).replace("WB-", ""))
    assert len(set(prefixed + bare)) == 400
    # and draw on the whole alphabet (4,000 characters: a character missing by chance is about e**-130)
    assert set("".join(prefixed + bare).replace("WB-", "")) == set(ALPHABET)


def test_a_coupon_is_not_issued_to_a_contact_that_does_not_exist(runtime, coupons, clock):
    # Given no contact "ghost"
    # When a coupon is asked for it
    with pytest.raises(LookupError, match="ghost"):
        coupons.issue("ghost", WINBACK, "r1", clock.now())
    # Then no contact hash appeared and nothing was counted
    assert not runtime.redis.exists(runtime.keys.contact("ghost"))
    assert "coupon:winback:issued" not in stats(runtime)


def test_templates_get_code_value_and_aware_times(contacts, coupons, runtime, clock):
    # Given a contact with a percent coupon that expires and an amount coupon that does not
    make_contacts(contacts, ["ana"])
    coupons.issue("ana", WINBACK, "r1", clock.now())
    coupons.issue("ana", CouponSpec(name="loyalty", amount=12.5, currency="eur"), "r1", clock.now())
    # When the engine, which already loaded the contact hash, asks for its coupons
    raw = runtime.redis.hgetall(runtime.keys.contact("ana"))
    values = {name: c.as_template_value() for name, c in coupons.coupons_of("ana", raw_fields=raw).items()}
    # Then templates see the code, the value and UTC-aware datetimes
    assert set(values) == {"loyalty", "winback"}
    winback, loyalty = values["winback"], values["loyalty"]
    assert set(winback) == {"code", "percent", "amount", "currency", "expires", "issued"}
    assert winback["percent"] == 20 and winback["amount"] is None
    assert winback["issued"].tzinfo is timezone.utc and winback["issued"].timestamp() == int(clock.now())
    assert winback["expires"].timestamp() == int(clock.now()) + 14 * DAY
    assert (loyalty["amount"], loyalty["currency"], loyalty["percent"], loyalty["expires"]) == (12.5, "EUR", None, None)


def test_a_value_too_long_for_the_compact_field_is_read_from_the_code_hash(contacts, coupons, runtime, clock):
    # Given a coupon whose amount does not fit in 64 bytes next to a long prefix and an expiry
    make_contacts(contacts, ["ana"])
    spec = CouponSpec(name="big", amount=1234567.891011, currency="USD", expires=3650 * DAY, prefix="ABCDEFGH")
    issued = coupons.issue("ana", spec, "r1", clock.now())
    # When its coupons are read
    field = coupon_fields(runtime, "ana")["k:big"]
    coupon = coupons.coupons_of("ana")["big"]
    # Then the compact field left the value out, and the coupon still has it
    assert len(field.encode()) <= 64 and field.count("|") == 3
    assert coupon == issued
    assert (coupon.amount, coupon.currency) == (1234567.891011, "USD")


def test_the_contact_hash_stays_small(contacts, coupons, runtime, clock):
    # Given a contact with many coupons of the largest shapes: long prefix, long expiry, long run ids
    make_contacts(contacts, ["ana"])
    specs = [
        CouponSpec(name=f"{'n' * 30}{i:02d}", prefix="ABCDEFGH", expires=3650 * DAY,
                   **({"percent": 12.345678901234} if i % 2 else {"amount": 99999.99, "currency": "EUR"}))
        for i in range(40)
    ]
    # When they are all issued, twice each (two runs)
    for spec in specs:
        for run in ("a-very-long-journey-name:a-very-long-stage-name:1", "x" * 200):
            coupons.issue("ana", spec, run, clock.now())
    # Then every coupon field is at most 64 bytes and Redis keeps the hash in its compact encoding
    fields = coupon_fields(runtime, "ana")
    assert len(fields) == 40
    assert max(len(value.encode()) for value in fields.values()) <= 64
    assert runtime.redis.object("encoding", runtime.keys.contact("ana")) in ("listpack", "ziplist")


# --- uniqueness under concurrency ------------------------------------------------------------------------


def test_threads_issuing_for_thousands_of_contacts_get_distinct_codes(contacts, runtime, clock):
    # Given 3,000 contacts and one store shared by 16 threads
    ids = make_contacts(contacts, (f"c{i}" for i in range(3000)))
    store = CouponStore(runtime)
    specs = [WINBACK, CouponSpec(name="other", percent=5, prefix="WB")]  # same prefix: one code space
    # When every contact gets two coupons at once
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda job: store.issue(job[0], job[1], "r1", clock.now()).code,
                              [(c, spec) for c in ids for spec in specs]))
    # Then all 6,000 codes are distinct, each reserved by its own key
    assert len(set(codes)) == 6000
    counts = stats(runtime)
    assert counts["coupon:winback:issued"] == counts["coupon:other:issued"] == 3000
    assert sum(1 for _ in runtime.redis.scan_iter(match=f"{runtime.keys.namespace}:coupon:*", count=1000)) == 6000


def test_the_same_run_asked_from_many_threads_at_once_gets_one_code(contacts, runtime, clock):
    # Given 50 contacts, and 32 threads that all ask for every contact's coupon as close together as possible
    ids = make_contacts(contacts, (f"c{i}" for i in range(50)))
    store = CouponStore(runtime)
    start = threading.Barrier(32)

    def ask(_: int) -> list[str]:
        start.wait()
        return [store.issue(c, WINBACK, "customer-lifecycle:lapsed:1", clock.now()).code for c in ids]

    # When they run
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(ask, range(32)))
    # Then every thread got the same code for a contact, and only one was issued per contact
    assert all(answer == answers[0] for answer in answers)
    assert len(set(answers[0])) == 50
    assert stats(runtime)["coupon:winback:issued"] == 50


CHILD = """
import json, sys
from automation.clock import ManualClock
from automation.config import Settings
from automation.language.couponspec import CouponSpec
from automation.store.coupons import CouponStore
from automation.runtime import open_runtime

first, count, shared = (int(a) for a in sys.argv[1:4])
runtime = open_runtime(Settings.from_env(), clock=ManualClock())
store = CouponStore(runtime)
spec = CouponSpec(name="winback", percent=20, prefix="WB")
ns = runtime.keys.namespace
runtime.redis.incr(f"{ns}:test:ready")
assert runtime.redis.blpop(f"{ns}:test:go", timeout=120), "never told to start"
codes = {}
for i in list(range(first, first + count)) + list(range(shared)):
    codes[f"c{i}"] = store.issue(f"c{i}", spec, "run-1", runtime.clock.now()).code
runtime.close()
print(json.dumps(codes))
"""


def test_processes_with_their_own_connections_issue_distinct_codes(contacts, runtime, settings):
    # Given 4 processes with their own connections, each to issue for 1,000 contacts of its own and
    # for 300 contacts all of them issue for (the same run)
    processes, own, shared = 4, 1000, 300
    make_contacts(contacts, (f"c{i}" for i in range(shared + processes * own)))
    env = {**settings.to_env(), "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(shared + n * own), str(own), str(shared)],
                         env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(processes)
    ]
    ns = runtime.keys.namespace
    wait_for(lambda: int(runtime.redis.get(f"{ns}:test:ready") or 0) == processes
             or any(child.poll() is not None for child in children), timeout=60, what="children to connect")
    # When they are all told to start at once
    runtime.redis.rpush(f"{ns}:test:go", *range(processes))
    outputs = [child.communicate(timeout=300) for child in children]
    assert all(child.returncode == 0 for child in children), [err for _, err in outputs]
    results = [json.loads(out) for out, _ in outputs]
    # Then the shared contacts got one code each, the same in every process
    for i in range(shared):
        assert len({result[f"c{i}"] for result in results}) == 1
    # And all codes of all contacts are distinct
    codes = {contact: code for result in results for contact, code in result.items()}
    assert len(codes) == shared + processes * own
    assert len(set(codes.values())) == len(codes)
    assert stats(runtime)["coupon:winback:issued"] == len(codes)


#: The first six codes random.Random(7) draws, one character at a time, from the alphabet.
SEEDED = ["WB-CZ6EP34VK5", "WB-DM3YJ834FF", "WB-494KF3VM5Z", "WB-9PPMZ3MME3", "WB-93KW6BF6K5", "WB-MBKVQ75MMP"]


def test_a_code_already_taken_is_drawn_again(contacts, runtime, clock):
    # Given a generator seeded the same way in every store, so the test knows which codes are drawn
    ids = make_contacts(contacts, [f"c{i}" for i in range(6)])
    # When six contacts get a coupon, each from a new store that starts the sequence from the top
    codes = [CouponStore(runtime, rng=random.Random(7)).issue(c, WINBACK, "r1", clock.now()).code for c in ids]
    # Then each drew again past the codes the earlier ones took: 0 + 1 + ... + 5 collisions
    assert codes == SEEDED
    assert stats(runtime)["coupon:winback:collisions"] == 15
    assert [code_hash(runtime, code).get("contact") for code in codes] == ids


class OneCode(random.Random):
    """A generator that always draws the same character: every code after the first collides."""

    def choice(self, seq):  # type: ignore[override]
        return seq[0]


def test_no_free_code_after_the_attempts_is_an_error(contacts, runtime, clock):
    # Given a generator that can only draw one code, already taken
    make_contacts(contacts, ["a", "b"])
    store = CouponStore(runtime, rng=OneCode(), attempts=3)
    store.issue("a", WINBACK, "r1", clock.now())
    # When another contact asks for a coupon
    with pytest.raises(CouponError, match="no free code"):
        store.issue("b", WINBACK, "r1", clock.now())
    # Then it has none, and the failed draws are counted
    assert store.coupons_of("b") == {}
    assert stats(runtime)["coupon:winback:collisions"] == 3


# --- checking specs --------------------------------------------------------------------------------------


def test_check_spec_builds_a_normalized_spec():
    # Given a journey step's coupon mapping, with lowercase currency and prefix and an int expiry
    spec = check_spec({"name": "loyalty-10", "amount": 10, "currency": "eur", "expires": 86400, "prefix": "ly"})
    # Then the spec is normalized
    assert spec == CouponSpec(name="loyalty-10", amount=10.0, currency="EUR", expires=86400.0, prefix="LY")
    assert check_spec({"name": "wb", "percent": 20, "expires": "14d"}).expires == 14 * DAY


@pytest.mark.parametrize("data, message", [
    ({"name": "wb", "percent": 20, "discount": 5}, "unknown key.*discount"),
    ({"percent": 20}, "needs a name"),
    ({"name": "Win Back", "percent": 20}, "lowercase"),
    ({"name": "x" * 33, "percent": 20}, "1-32"),
    ({"name": "wb"}, "needs a percent"),
    ({"name": "wb", "percent": 20, "amount": 5, "currency": "EUR"}, "not both"),
    ({"name": "wb", "percent": 0}, "more than 0 and at most 100"),
    ({"name": "wb", "percent": 120}, "more than 0 and at most 100"),
    ({"name": "wb", "percent": "20%"}, "must be a number"),
    ({"name": "wb", "percent": True}, "must be a number"),
    ({"name": "wb", "percent": float("nan")}, "must be a number"),
    ({"name": "wb", "amount": -5, "currency": "EUR"}, "amount must be more than 0"),
    ({"name": "wb", "amount": 5}, "needs a currency"),
    ({"name": "wb", "amount": 5, "currency": "EURO"}, "3-letter"),
    ({"name": "wb", "percent": 5, "currency": "EUR"}, "goes with an amount"),
    ({"name": "wb", "percent": 5, "expires": 0}, "expires must be more than 0"),
    ({"name": "wb", "percent": 5, "expires": 20 * 365 * DAY}, "at most 10 years"),
    ({"name": "wb", "percent": 5, "expires": "soon"}, "duration"),
    ({"name": "wb", "percent": 5, "prefix": "WIN-BACK"}, "at most 8 letters"),
    ({"name": "wb", "percent": 5, "prefix": "ABCDEFGHI"}, "at most 8 letters"),
    (["name", "wb"], "must be a mapping"),
])
def test_check_spec_refuses_bad_coupons_with_a_reason(data, message):
    # Given a malformed coupon mapping; When it is checked; Then the error says what is wrong
    with pytest.raises(ValueError, match=message):
        check_spec(data)


# --- redeeming -------------------------------------------------------------------------------------------


@pytest.fixture
def issued(contacts, coupons, clock):
    """Ana's win-back coupon, valid for 14 days."""
    make_contacts(contacts, ["ana", "ben"])
    return coupons.issue("ana", WINBACK, "r1", clock.now())


def test_redeem_by_the_holder_in_time(coupons, issued, runtime, clock):
    # Given Ana's coupon; When she uses it at checkout, typed in lowercase with spaces instead of the dash
    typed = issued.code.lower().replace("-", " ")
    redemption = coupons.redeem(f" {typed[:6]} {typed[6:]} ", "ana", clock.now() + DAY, "purchase")
    # Then it is redeemed, attributed to her, and counted
    assert (redemption.status, redemption.code, redemption.name, redemption.contact_id, redemption.at) == (
        "redeemed", issued.code, "winback", "ana", clock.now() + DAY)
    record = code_hash(runtime, issued.code)
    assert record["redeemed_by"] == "ana" and record["redeemed_source"] == "purchase"
    assert stats(runtime)["coupon:winback:redeemed"] == 1


def test_a_code_is_redeemed_once(coupons, issued, runtime, clock):
    # Given Ana's coupon, redeemed at a purchase
    coupons.redeem(issued.code, "ana", clock.now(), "purchase")
    # When it is used again, without the dash
    again = coupons.redeem(issued.code.replace("-", ""), "ana", clock.now() + 60, "coupon_redeemed")
    # Then the second use is reported, with the time of the first
    assert (again.status, again.code, again.contact_id, again.at) == ("already_redeemed", issued.code, "ana",
                                                                      clock.now())
    counts = stats(runtime)
    assert counts["coupon:winback:redeemed"] == 1 and counts["coupon:winback:already_redeemed"] == 1


def test_the_same_redemption_reported_twice_counts_once(coupons, issued, runtime, clock):
    # Given a redemption recorded from a purchase event; When the same event is delivered again
    first = coupons.redeem(issued.code, "ana", clock.now(), "purchase")
    again = coupons.redeem(issued.code, "ana", clock.now(), "purchase")
    # Then it gets the same answer and nothing is counted twice
    assert again == first and first.status == "redeemed"
    assert stats(runtime)["coupon:winback:redeemed"] == 1
    assert "coupon:winback:already_redeemed" not in stats(runtime)


def test_an_expired_code_is_recorded_but_flagged(coupons, issued, runtime, clock):
    # Given Ana's 14-day coupon; When she uses it on day 15
    redemption = coupons.redeem(issued.code, "ana", clock.now() + 15 * DAY, "purchase")
    # Then the redemption is recorded, flagged late
    assert redemption.status == "expired" and redemption.contact_id == "ana"
    assert code_hash(runtime, issued.code)["late"] == "1"
    counts = stats(runtime)
    assert counts["coupon:winback:redeemed"] == 1 and counts["coupon:winback:late"] == 1
    # And a second use is still refused
    assert coupons.redeem(issued.code, "ana", clock.now() + 16 * DAY, "purchase").status == "already_redeemed"


def test_a_code_used_by_another_contact_is_recorded_but_flagged(coupons, issued, runtime, clock):
    # Given Ana's coupon; When Ben uses it
    redemption = coupons.redeem(issued.code, "ben", clock.now(), "purchase")
    # Then the redemption is recorded, attributed to Ana the holder, and flagged
    assert (redemption.status, redemption.contact_id) == ("other_contact", "ana")
    assert code_hash(runtime, issued.code)["redeemed_by"] == "ben"
    counts = stats(runtime)
    assert counts["coupon:winback:redeemed"] == 1 and counts["coupon:winback:other_contact"] == 1


def test_an_anonymous_redemption_is_the_holders(coupons, issued, clock):
    # Given Ana's coupon; When it is used at a guest checkout (no contact known)
    redemption = coupons.redeem(issued.code, None, clock.now(), "purchase")
    # Then it counts as Ana's
    assert (redemption.status, redemption.contact_id) == ("redeemed", "ana")


@pytest.mark.parametrize("typed", ["WB-AAAAAAAAAA", "nonsense!", "", "WB-" + "2" * 40])
def test_an_unknown_code_is_reported_and_counted(coupons, issued, runtime, clock, typed):
    # Given Ana's coupon; When a code that was never issued is used
    redemption = coupons.redeem(typed, "ana", clock.now(), "purchase")
    # Then it is unknown, nobody's, and counted
    assert (redemption.status, redemption.name, redemption.contact_id) == ("unknown_code", None, None)
    assert stats(runtime)["coupon:unknown_code"] == 1
    assert "coupon:winback:redeemed" not in stats(runtime)


def test_concurrent_redemptions_of_one_code_have_one_winner(coupons, issued, runtime, clock):
    # Given Ana's coupon; When 20 checkouts use it at the same moment
    start = threading.Barrier(20)

    def use(n: int) -> str:
        start.wait()
        return coupons.redeem(issued.code, "ana", clock.now() + n, f"purchase-{n}").status

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(use, range(20)))
    # Then exactly one redeemed it
    assert sorted(statuses) == ["already_redeemed"] * 19 + ["redeemed"]
    assert stats(runtime)["coupon:winback:redeemed"] == 1
