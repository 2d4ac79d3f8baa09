"""`lifecycle demo` end to end: the README's first command, with a faster clock."""

from __future__ import annotations

import email
import email.policy
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.library]

# What the sample population (automation/ops/data/demo.yaml) must receive in 40 days, journey by journey.
EXPECTED = Counter({
    # customer-lifecycle
    ("ana", "welcome"): 1, ("ben", "welcome"): 1, ("chloe", "welcome"): 1, ("ewa", "welcome"): 1,
    ("rosa", "welcome"): 1, ("theo", "welcome"): 1,
    ("ana", "demo-offer"): 1, ("chloe", "demo-offer"): 1,
    ("ben", "thank-you"): 1, ("dmitri", "thank-you"): 1, ("ewa", "thank-you"): 1, ("jonas", "thank-you"): 1,
    ("sam", "thank-you"): 1, ("rosa", "thank-you"): 1,
    ("ben", "check-in"): 1, ("dmitri", "check-in"): 1, ("ewa", "check-in"): 1, ("sam", "check-in"): 1,
    ("rosa", "check-in"): 1,
    ("farid", "thank-you-again"): 1, ("grace", "thank-you-again"): 1, ("ines", "thank-you-again"): 1,
    ("quinn", "thank-you-again"): 1, ("jonas", "thank-you-again"): 1,
    ("hiro", "loyalty-welcome"): 1, ("grace", "loyalty-welcome"): 1, ("tara", "loyalty-welcome"): 2,
    ("hiro", "loyalty-reminder"): 1, ("grace", "loyalty-reminder"): 1,
    ("ines", "winback-coupon"): 1, ("jonas", "winback-coupon"): 1, ("kasia", "winback-coupon"): 1,
    ("liam", "winback-coupon"): 1, ("quinn", "winback-coupon"): 1, ("tara", "winback-coupon"): 1,
    ("ines", "winback-reminder"): 1, ("kasia", "winback-reminder"): 1, ("quinn", "winback-reminder"): 1,
    ("ines", "winback-last-chance"): 1, ("kasia", "winback-last-chance"): 1, ("quinn", "winback-last-chance"): 1,
    ("nora", "winback-vip"): 1, ("mei", "last-call"): 1, ("nora", "last-call"): 1,
    # b2b-funnel
    ("lena", "b2b-intro"): 1, ("lena", "b2b-guide"): 1, ("lena", "b2b-webinar-invite"): 1,
    ("lena", "b2b-proposal"): 1, ("lena", "notify-sales"): 1, ("lena", "b2b-onboarding"): 1,
    ("marek", "b2b-guide"): 1, ("marek", "b2b-webinar-invite"): 1,
    # product-funnel
    ("sora", "studio-welcome"): 1, ("sora", "trial-offer"): 1, ("sora", "trial-tips"): 1,
    ("sora", "studio-thank-you"): 1, ("sora", "studio-check-in"): 1, ("sora", "survey"): 1,
    ("sora", "review-request"): 1, ("sora", "referral-invite"): 1,
    ("zahra", "studio-welcome"): 1, ("zahra", "trial-offer"): 1, ("zahra", "studio-demo-offer"): 1,
    # cart-abandonment, hot-leads, birthday, renewal-reminder, sms-opt-in, vip-handoff
    ("ana", "cart-reminder"): 1, ("ana", "cart-coupon"): 1, ("ana", "cart-coupon-push"): 1,
    ("ewa", "cart-reminder"): 1, ("ewa", "cart-coupon"): 1,
    ("theo", "notify-sales"): 1, ("theo", "demo-offer"): 1,
    ("dmitri", "birthday"): 1,
    ("sora", "renewal-reminder"): 1, ("sora", "renewal-tomorrow"): 1,
    ("liam", "sms-welcome"): 1,
    ("hiro", "notify-account-team"): 1, ("grace", "notify-account-team"): 1, ("tara", "notify-account-team"): 1,
    # saas-trial, saas-nps: Omid's reminder 3 days before his 4-day trial ends is skipped (if_past), his
    # second turn in `paid` sends no second thank-you (once), his win-back is the 20% variant
    ("wiktor", "saas-welcome"): 1, ("wiktor", "saas-trial-ending"): 1, ("wiktor", "saas-trial-tomorrow"): 1,
    ("wiktor", "saas-thank-you"): 1,
    ("omid", "saas-welcome"): 1, ("omid", "saas-tips"): 1, ("omid", "saas-trial-tomorrow"): 1,
    ("omid", "saas-thank-you"): 1, ("omid", "saas-winback"): 1, ("omid", "saas-nps"): 1,
    # flash-sale, sent on day 14.5 for 10:00 local to active and loyal customers: a push to whoever
    # takes push (Quinn), an email to the others
    ("quinn", "flash-sale"): 1, ("hiro", "season-preview"): 1, ("farid", "season-preview"): 1,
    ("grace", "season-preview"): 1, ("tara", "season-preview"): 1, ("jonas", "season-preview"): 1,
})
#: The loyalty programme broadcasts on the 1st of each month: once or twice in 40 days, depending on the date.
BROADCAST = ("loyalty-points", {"hiro", "grace"})
DAYS = 40
#: The timeline prints days to a tenth: two printed days of the same order may be a tenth apart the other way.
TENTH = 0.1 + 1e-9   # and a hair more: 3.4 + 1 - 0.1 is 4.300000000000001 in floating point
#: "day  12.3  Name (id)        text", or "day  12.3  id               text" for a contact without a name.
LINE = re.compile(r"^day\s+(?P<day>-?\d+\.\d)\s+(?:[^()]*?\((?P<id>[\w-]+)\)|(?P<bare>[\w-]+))\s+(?P<text>\S.*?)\s*$")


@dataclass(frozen=True)
class Line:
    """One line of the demo's timeline: the simulated day the engine recorded, the contact, what happened."""

    n: int
    day: float
    contact: str
    text: str

    def sent(self, step: str) -> bool:
        words = self.text.split()
        return len(words) >= 3 and words[0] == "sent" and words[2] == step


def timeline(out: str) -> list[Line]:
    found = []
    for n, raw in enumerate(out.splitlines()):
        match = LINE.match(raw)
        if match:
            found.append(Line(n, float(match["day"]), match["id"] or match["bare"], match["text"]))
    return found


def one(lines: list[Line], contact: str, text: str) -> Line:
    """The first line of `contact` containing `text` (it must be there)."""
    found = [line for line in lines if line.contact == contact and text in line.text]
    assert found, f"{contact}: no {text!r} in the timeline"
    return found[0]


def sent(lines: list[Line], contact: str, step: str) -> Line | None:
    return next((line for line in lines if line.contact == contact and line.sent(step)), None)


def leftover_processes(home: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            if "automation worker" in cmdline and process.environ().get("LIFECYCLE_HOME", "").startswith(str(home)):
                found.append(process)
            elif "redis-server" in cmdline and process.cwd().startswith(str(home)):
                found.append(process)  # redis-server runs in its data folder
        except (psutil.Error, OSError, IndexError):
            continue
    return found


def test_demo_delivers_the_lifecycle_messages_and_cleans_up(project: Path):
    env = {**os.environ, "LIFECYCLE_HOME": str(project / ".lifecycle")}
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "automation", "demo", "--days", str(DAYS), "--speed", str(2 * 86400),
         "--outbox", str(project / "outbox")],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    # The demo ends with the journeys' report next to its messages: diagrams and charts, offline
    report = (project / "outbox" / "report.html").read_text(encoding="utf-8")
    assert 'class="flow" id="flow-customer-lifecycle"' in report and 'id="sends-per-day"' in report
    lines = timeline(out)
    files = sorted((project / "outbox").glob("*/*--*"))
    delivered = Counter((path.name.split("--")[0], path.name.split("--")[2]) for path in files)
    # The timeline shows every message the outbox holds, once, and the summary counts them
    shown = Counter((line.contact, line.text.split()[2]) for line in lines if line.text.startswith("sent "))
    assert shown == delivered, out
    assert f"sent {sum(delivered.values())} messages" in out

    # The demo runs in real time, two simulated days a second. A scripted event reaches the engine when the
    # demo gets to it, so on a busy machine it may come after a step it would have cancelled, or a step may
    # run before it. Either story is right if the engine's own record (the days on the timeline) tells it.
    expected = Counter(EXPECTED)
    # Jonas and Tara buy again two days after lapsing: the win-back SMS due three days after the lapse is
    # cancelled, unless it went out before the engine took the purchase in (the conversion)
    for contact in ("jonas", "tara"):
        purchase = one(lines, contact, "*  purchase")
        converts = one(lines, contact, "+  converts in 'customer-lifecycle'  (goal purchase)")
        assert purchase.n < converts.n
        reminder = sent(lines, contact, "winback-reminder")
        if reminder is None:
            one(lines, contact, "x  cancelled pending step 'winback-reminder' (left 'lapsed')")
        else:
            assert reminder.day <= converts.day + TENTH, (reminder, converts)
            expected[(contact, "winback-reminder")] += 1
    # Ben buys half an hour after starting a checkout: no cart reminder (due an hour after the checkout),
    # unless it went out before the engine took the purchase in; either way the purchase converts
    converts = one(lines, "ben", "+  converts in 'cart-abandonment'  (goal purchase)")
    assert one(lines, "ben", "*  checkout_started").n < converts.n
    reminder = sent(lines, "ben", "cart-reminder")
    if reminder is not None:
        assert reminder.day <= converts.day + TENTH, (reminder, converts)
        expected[("ben", "cart-reminder")] += 1
    # Chloé's third page view makes her demo offer (day 2) go out, unless the step ran before it arrived
    third_view = one(lines, "chloe", "*  page_view (page=/pricing)")
    if sent(lines, "chloe", "demo-offer") is None:
        skipped = one(lines, "chloe", "skipped email demo-offer")
        assert skipped.day <= third_view.day + TENTH, (skipped, third_view)
        expected[("chloe", "demo-offer")] -= 1
    # Steps due within the 40 days all run, however long they take (the demo waits for them); the engine
    # dates a chain of waits from when it started it. Quinn's win-back starts when he lapses (day 30), the
    # loyalty reminder 30 days after a contact becomes loyal (Grace on day 5, Hiro at the start).
    for contact, entry, step, offset in [("quinn", "-> enters stage 'lapsed'", "winback-reminder", 3),
                                         ("quinn", "-> enters stage 'lapsed'", "winback-last-chance", 7),
                                         ("grace", "-> enters stage 'loyal'", "loyalty-reminder", 30),
                                         ("hiro", "-> enters stage 'loyal'", "loyalty-reminder", 30)]:
        started = one(lines, contact, entry)
        if sent(lines, contact, step) is None:
            assert started.day + offset > DAYS - TENTH / 2, f"{contact} {step}: due by day {DAYS}, not sent"
            expected[(contact, step)] -= 1
    expected = +expected

    template, members = BROADCAST
    broadcasts = {key: delivered.pop(key) for key in list(delivered) if key[1] == template}
    assert set(broadcasts) == {(member, template) for member in members}, out
    assert all(count in (1, 2) for count in broadcasts.values()), broadcasts
    assert delivered == expected, out

    # The timeline tells the story in order, on the days the engine recorded
    assert "skipped email welcome" in out and "no valid email address" in out
    # The flash sale goes at 10:00 on each contact's own clock: Hiro in Tokyo before Grace in Europe
    assert "marketing        *  sends the flash-sale broadcast for 10:00 in each contact's zone" in out
    assert sent(lines, "hiro", "season-preview").day < sent(lines, "grace", "season-preview").day
    checkout = one(lines, "ana", "*  checkout_started")
    started = one(lines, "ana", "-> starts journey 'cart-abandonment'  (event checkout_started)")
    cart_reminder, cart_coupon = sent(lines, "ana", "cart-reminder"), sent(lines, "ana", "cart-coupon")
    assert cart_reminder and cart_coupon and sent(lines, "ana", "cart-coupon-push")
    assert checkout.n < started.n < cart_reminder.n < cart_coupon.n
    assert cart_coupon.day >= checkout.day + 1 + 1 / 24 - TENTH     # an hour, then a day after the checkout
    lapsed = one(lines, "quinn", "-> enters stage 'lapsed'")
    assert lapsed.day >= 30.0                                       # his last purchase was 60 days before day 0
    for step, earliest in (("winback-coupon", 30.0), ("winback-reminder", 33.0), ("winback-last-chance", 37.0)):
        line = sent(lines, "quinn", step)
        assert line is None or line.day >= earliest, line
    assert one(lines, "theo", "-> starts journey 'hot-leads'").n > one(lines, "theo", "*  email_opened").n
    # Guardrails: Kasia's win-back SMS falls due at midnight in Chicago and waits for 08:00 there;
    # Ewa's cart reminder would be her second marketing email of the day, so the cap defers it
    held = one(lines, "kasia", "held sms winback-reminder")
    assert "quiet hours (21:00-08:00 America/Chicago)" in held.text
    assert sent(lines, "kasia", "winback-reminder").day >= held.day + 7 / 24 - TENTH
    thank_you = sent(lines, "ewa", "thank-you")
    deferred = one(lines, "ewa", "deferred email cart-reminder")
    assert sent(lines, "ewa", "cart-reminder").day >= thank_you.day + 1 - TENTH > deferred.day
    assert one(lines, "lena", "+  converts in 'b2b-funnel'  (goal contract_signed)").n > \
        one(lines, "lena", "*  contract_signed").n
    # The messages are real, personalised email, in the contact's language
    path = next((project / "outbox" / "email").glob("dmitri--*--check-in--*.eml"))
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "Как вам Merino wool shirt?"
    assert "Дмитрий" in message.get_body(("html",)).get_content()
    path = next((project / "outbox" / "email").glob("zahra--*--trial-offer--*.eml"))
    html = email.message_from_bytes(path.read_bytes(), policy=email.policy.default).get_body(("html",)).get_content()
    assert '<html lang="fa" dir="rtl">' in html
    # The SaaS trial: a reminder whose moment passed is skipped, not sent late; a thank-you goes once
    assert "the date has passed (if_past: skip)" in one(lines, "omid", "skipped email saas-trial-ending").text
    assert "sent before (once: true)" in one(lines, "omid", "skipped email saas-thank-you").text
    assert one(lines, "omid", "skipped email saas-thank-you").day >= 24 - TENTH     # back from churn-risk
    assert "if: events.project_created.count == 0" in one(lines, "wiktor", "skipped email saas-tips").text
    path = next((project / "outbox" / "email").glob("omid--saas-trial--saas-winback--*.eml"))
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "20 درصد تخفیف روی صورت‌حساب بعدی Northwind Cloud"
    assert '<html lang="fa" dir="rtl">' in message.get_body(("html",)).get_content()
    # and nothing keeps running
    assert leftover_processes(project / ".lifecycle") == []
