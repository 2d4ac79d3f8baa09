"""Rules: the sandboxed expression language and how time-based rules become timers."""

import pytest

from automation.expressions import (
    DAY,
    EventStats,
    EventsView,
    ExpressionError,
    RuleError,
    TimeTracker,
    compile_rule,
    time_functions,
)

NOW = 1_767_225_600.0


def context(events=None, contact=None, now=NOW):
    tracker = TimeTracker(now)
    view = EventsView(events or {})
    return tracker, {"events": view, "contact": contact or {}, **time_functions(view, tracker)}


def test_a_time_comparison_notes_when_it_will_flip():
    # Given a purchase 80 days ago
    tracker, ctx = context({"purchase": EventStats(1, None, NOW - 80 * DAY)})
    rule = compile_rule("events.purchase.count > 0 and days_since('purchase') >= 90")
    # When the rule is evaluated now
    assert rule.evaluate(ctx) is False
    # Then it knows it becomes true in 10 days, without any event
    assert tracker.next_change == pytest.approx(NOW + 10 * DAY, abs=0.01)


def test_the_earliest_flip_wins_and_past_flips_are_ignored():
    tracker, ctx = context({"purchase": EventStats(1, None, NOW - 100 * DAY)})
    rule = compile_rule("days_since('purchase') >= 90 and days_since('purchase') < 365")
    assert rule.evaluate(ctx) is True
    assert tracker.next_change == pytest.approx(NOW + 265 * DAY, abs=0.01)


def test_arithmetic_keeps_the_time_dependence():
    tracker, ctx = context({"visit": EventStats(1, None, NOW - 3 * DAY)})
    assert compile_rule("days_since('visit') / 7 >= 1").evaluate(ctx) is False
    assert tracker.next_change == pytest.approx(NOW + 4 * DAY, abs=0.01)


def test_an_event_that_never_happened_is_infinitely_long_ago():
    tracker, ctx = context()
    assert compile_rule("days_since('purchase') >= 90").evaluate(ctx) is True
    assert compile_rule("hours_since('purchase') < 1").evaluate(ctx) is False
    assert tracker.next_change is None


def test_days_since_a_date_attribute():
    tracker, ctx = context(contact={"signed_up_at": "2025-12-24T00:00:00Z"})
    assert compile_rule("days_since(contact.signed_up_at) >= 7").evaluate(ctx) is True
    assert compile_rule("days_since(contact.signed_up_at) >= 30").evaluate(ctx) is False
    assert tracker.next_change == pytest.approx(NOW + 22 * DAY, abs=0.01)


def test_missing_values_are_false_not_errors():
    _, ctx = context(contact={"first_name": "Ana"})
    assert compile_rule("contact.lifetime_value > 100").evaluate(ctx) is False
    assert compile_rule("not contact.vip").evaluate(ctx) is True
    assert compile_rule("contact.lifetime_value == none").evaluate(ctx) is True
    assert compile_rule("events.never_seen.count == 0").evaluate(ctx) is True


def test_rules_cannot_reach_outside_the_sandbox():
    _, ctx = context()
    # Unsafe attributes read as missing ...
    assert compile_rule("events.__class__").evaluate(ctx) is False
    # ... and calling into Python internals is refused.
    with pytest.raises(RuleError):
        compile_rule("''.__class__.__mro__[1].__subclasses__()").evaluate(ctx)


@pytest.mark.parametrize("source, message, hint", [
    ("events.purchase.count >", "does not compile", "Jinja2"),
    ("evnts.purchase.count > 0", "unknown name 'evnts'", "did you mean 'events'?"),
    ("now > 5", "cannot use 'now'", "days_since"),
    ("  ", "empty", None),
])
def test_bad_rules_explain_themselves(source, message, hint):
    with pytest.raises(ExpressionError) as error:
        compile_rule(source)
    assert message in error.value.message
    if hint:
        assert hint in error.value.hint


def test_journey_vars_are_known_names_and_their_value_decides():
    # Given a rule that reads the journey variable lapse_days, and a purchase 100 days ago
    rule = compile_rule("days_since('purchase') >= lapse_days", ["lapse_days"])
    purchase = {"purchase": EventStats(1, None, NOW - 100 * DAY)}
    # When the journey sets lapse_days to 90, the contact has lapsed
    _, ctx = context(purchase)
    assert rule.evaluate({**ctx, "lapse_days": 90}) is True
    # When it sets 120, not yet, and the rule flips when 120 days have passed
    tracker, ctx = context(purchase)
    assert rule.evaluate({**ctx, "lapse_days": 120}) is False
    assert tracker.next_change == pytest.approx(NOW + 20 * DAY, abs=0.01)
    # And without the variable declared, the name is unknown
    with pytest.raises(ExpressionError, match="unknown name 'lapse_days'"):
        compile_rule("days_since('purchase') >= lapse_days")
