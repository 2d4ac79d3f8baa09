"""`lifecycle demo` end to end: the README's first command, with a faster clock."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys
from collections import Counter
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
    ("theo", "notify-sales"): 1, ("theo", "demo-offer"): 1,
    ("dmitri", "birthday"): 1,
    ("sora", "renewal-reminder"): 1, ("sora", "renewal-tomorrow"): 1,
    ("liam", "sms-welcome"): 1,
    ("hiro", "notify-account-team"): 1, ("grace", "notify-account-team"): 1, ("tara", "notify-account-team"): 1,
})
#: The loyalty programme broadcasts on the 1st of each month: once or twice in 40 days, depending on the date.
BROADCAST = ("loyalty-points", {"hiro", "grace"})


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
        [sys.executable, "-m", "automation", "demo", "--days", "40", "--speed", str(2 * 86400),
         "--outbox", str(project / "outbox")],
        cwd=project, env=env, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    files = sorted((project / "outbox").glob("*/*--*"))
    delivered = Counter((path.name.split("--")[0], path.name.split("--")[2]) for path in files)
    template, members = BROADCAST
    broadcasts = {key: delivered.pop(key) for key in list(delivered) if key[1] == template}
    assert set(broadcasts) == {(member, template) for member in members}, result.stdout
    assert all(count in (1, 2) for count in broadcasts.values()), broadcasts
    assert delivered == EXPECTED, result.stdout
    # The timeline tells the story as it goes
    out = result.stdout
    assert "Jonas (jonas)    x  cancelled pending step 'winback-reminder' (left 'lapsed')" in out
    assert "skipped email welcome" in out and "no valid email address" in out
    assert "Ana (ana)        -> starts journey 'cart-abandonment'  (event checkout_started)" in out
    assert "Ben (ben)        +  converts in 'cart-abandonment'  (goal purchase)" in out
    assert "Theo (theo)      -> starts journey 'hot-leads'" in out
    assert "Lena (lena)      +  converts in 'b2b-funnel'  (goal contract_signed)" in out
    assert f"sent {sum(EXPECTED.values()) + sum(broadcasts.values())} messages" in out
    # The messages are real, personalised email, in the contact's language
    path = next((project / "outbox" / "email").glob("dmitri--*--check-in--*.eml"))
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "Как вам Merino wool shirt?"
    assert "Дмитрий" in message.get_body(("html",)).get_content()
    path = next((project / "outbox" / "email").glob("zahra--*--trial-offer--*.eml"))
    html = email.message_from_bytes(path.read_bytes(), policy=email.policy.default).get_body(("html",)).get_content()
    assert '<html lang="fa" dir="rtl">' in html
    # and nothing keeps running
    assert leftover_processes(project / ".lifecycle") == []
