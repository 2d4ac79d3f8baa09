"""`lifecycle validate` on every construct of the journey language, each mistake at its exact path:line:col.

tests/test_validate.py covers the error classes (YAML, schema, rules, channels, templates); this file
walks the language itself: the flow of steps, splits, waits, triggers, the checks across journeys,
the warnings against journeys/_contact.yaml, and the published JSON Schema. Every test writes a tiny
journey, validates it the way a marketer would, and asserts the exact lines printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Callable

import pytest
from ruamel.yaml import YAML

from automation.language.loader import SCHEMA
from automation.ops.cli import main
from tests.conftest import ROOT, write

HINT = "    hint: "
NOTE = "{% block subject %}A note{% endblock %}\n{% block html %}<p>A note.</p>{% endblock %}\n"


@dataclass
class Result:
    """What `lifecycle validate` printed, line by line: the findings, then the summary line."""

    code: int
    lines: list[str]
    summary: str = ""

    @property
    def problems(self) -> list[str]:
        """The diagnostics (errors and warnings), without their hint lines."""
        return [line for line in self.lines if not line.startswith(HINT)]

    def hint(self, problem: str) -> str | None:
        """The hint printed under a diagnostic (None if it has none)."""
        assert problem in self.lines, f"{problem!r} not in:\n{self.text}"
        index = self.lines.index(problem) + 1
        if index < len(self.lines) and self.lines[index].startswith(HINT):
            return self.lines[index].removeprefix(HINT)
        return None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def validate(capsys, project: Path, *paths: Path) -> Result:
    code = main(["validate", *map(str, paths), "--templates", str(project / "templates")])
    lines = capsys.readouterr().out.splitlines()
    assert lines, "validate printed nothing, not even its summary"
    return Result(code, lines[:-1], lines[-1])


def contact_locales(project: Path) -> list[str]:
    return list(YAML().load((project / "journeys" / "_contact.yaml").read_text(encoding="utf-8"))["locales"])


def with_note(project: Path) -> Path:
    """The project plus an email template `note` that uses no variables and exists in every locale
    journeys/_contact.yaml lists, so a journey can send it without any template diagnostic."""
    for locale in contact_locales(project):
        write(project / "templates" / "email" / f"note.{locale}.html", NOTE)
    return project


def checker(capsys, project: Path) -> Callable[[str, str], tuple[str, Result]]:
    """Write journeys/<name>.yaml and validate that one file: returns (its path as printed, the result)."""

    def run(name: str, text: str) -> tuple[str, Result]:
        path = write(project / "journeys" / f"{name}.yaml", text)
        return str(path), validate(capsys, project, path)

    return run


@pytest.fixture
def lang(project: Path) -> Path:
    return with_note(project)


@pytest.fixture
def check(capsys, lang: Path) -> Callable[[str, str], tuple[str, Result]]:
    return checker(capsys, lang)


# -- the flow of steps: what can never run -------------------------------------------------------------


def test_steps_after_an_exit_can_never_be_reached(check):
    # Given a triggered journey whose run ends at an exit with two steps below it
    path, result = check("ends", """\
journey: ends
trigger: {event: signup}
steps:
  - send: email
    template: note
  - exit: done
  - send: email
    template: note
  - wait: 1d
    track: reminded
""")
    # Then both later steps are warned about, at their list items, naming the exit's line
    assert result.problems == [
        f"{path}:7:5: warning: this step can never be reached",
        f"{path}:9:5: warning: this step can never be reached",
    ], result.text
    assert result.hint(f"{path}:7:5: warning: this step can never be reached") == "the run ends at the exit on line 6"
    assert result.code == 0   # warnings only


def test_a_step_after_a_conditional_exit_is_reachable(check):
    # Given an exit that only ends the run for buyers
    path, result = check("maybe-ends", """\
journey: maybe-ends
trigger: {event: signup}
steps:
  - exit: already-customer
    if: events.purchase.count > 0
  - send: email
    template: note
""")
    # Then everyone else reaches the send: nothing to warn about
    assert result.lines == [], result.text


def test_a_branch_path_after_a_path_without_when_can_never_be_taken(check):
    path, result = check("paths", """\
journey: paths
stages:
  - name: all
    steps:
      - branch:
          - steps:
              - send: email
                template: note
          - when: contact.plan == 'pro'
            steps:
              - send: email
                template: note
""")
    assert result.problems == [f"{path}:9:13: warning: this path can never be taken"], result.text
    assert result.hint(result.problems[0]) == "the path on line 6 has no 'when' and takes every contact first"
    assert result.code == 0


def test_every_stage_after_a_catch_all_stage_is_unreachable(check):
    path, result = check("catch-all", """\
journey: catch-all
stages:
  - name: everyone
  - name: buyers
    when: events.purchase.count > 0
  - name: lapsed
    when: days_since('purchase') > 90
""")
    assert result.problems == [
        f"{path}:4:11: warning: stage 'buyers' can never be reached",
        f"{path}:6:11: warning: stage 'lapsed' can never be reached",
    ], result.text
    assert result.hint(result.problems[0]) == ("stage 'everyone' above has no 'when' rule and catches every contact "
                                               "first; move it to the end")
    assert result.code == 0


# -- split ----------------------------------------------------------------------------------------------

SPLIT = """\
journey: ab
stages:
  - name: all
    steps:
      - split:
          name: subject-test
          variants:
{variants}"""


def test_split_weights_must_add_up_to_100(check):
    path, result = check("ab", SPLIT.format(variants="""\
            - name: a
              weight: 50
              steps:
                - send: email
                  template: note
            - name: b
              weight: 30
"""))
    # The error is on the variants list, and the hint lists every weight
    assert result.problems == [f"{path}:8:13: the weights of split 'subject-test' add up to 80, not 100"], result.text
    assert result.hint(result.problems[0]) == "weights are percentages of contacts: a 50 + b 30"
    assert result.code == 1


def test_a_holdout_variant_cannot_have_steps(check):
    path, result = check("ab", SPLIT.format(variants="""\
            - name: offer
              weight: 90
            - name: holdout
              weight: 10
              holdout: true
              steps:
                - send: email
                  template: note
"""))
    assert result.problems == [f"{path}:13:15: a holdout receives nothing: it cannot have steps"], result.text
    assert result.hint(result.problems[0]) == "remove the steps, or make it a normal variant"
    assert result.code == 1


def test_a_variant_with_weight_0_is_a_warning(check):
    path, result = check("ab", SPLIT.format(variants="""\
            - name: a
              weight: 100
            - name: b
              weight: 0
"""))
    # The warning is on the variant's line (its column: see the next test)
    [warning] = result.problems
    assert warning.startswith(f"{path}:10:"), result.text
    assert warning.endswith(": warning: variant 'b' has no weight: no contact will get it"), result.text
    assert result.code == 0


def test_the_weight_0_warning_points_at_the_variant(check):
    path, result = check("ab", SPLIT.format(variants="""\
            - name: a
              weight: 100
            - name: b
              weight: 0
"""))
    # Like "this path can never be taken", at the list item: `name: b` on line 10, column 15
    assert result.problems == [f"{path}:10:15: warning: variant 'b' has no weight: no contact will get it"], \
        result.text


def test_duplicate_variant_names(check):
    path, result = check("ab", SPLIT.format(variants="""\
            - name: a
              weight: 50
            - name: a
              weight: 50
"""))
    assert result.problems == [f"{path}:10:21: variant 'a' is named twice"], result.text
    assert result.code == 1


# -- waits ----------------------------------------------------------------------------------------------


def test_wait_for_needs_a_timeout(check):
    path, result = check("waits", """\
journey: waits
trigger: {event: signup}
steps:
  - wait_for: {event: purchase}
    on_event:
      - send: email
        template: note
""")
    # The schema's missing required key, at the wait_for mapping
    assert result.problems == [f"{path}:4:15: missing required key 'timeout' in 'wait_for'"], result.text
    assert result.hint(result.problems[0]) == ("how long to wait before taking the on_timeout path, "
                                               "e.g. timeout: 1d")
    assert result.code == 1


def test_on_event_and_on_timeout_belong_to_a_wait_for(check):
    path, result = check("waits", """\
journey: waits
trigger: {event: signup}
steps:
  - send: email
    template: note
    on_event:
      - exit: bought
  - wait: 1d
    on_timeout:
      - exit: bored
""")
    assert result.problems == [
        f"{path}:6:5: 'on_event' needs 'wait_for' in the same step",
        f"{path}:9:5: 'on_timeout' needs 'wait_for' in the same step",
    ], result.text
    assert result.hint(result.problems[0]) == "on_event and on_timeout belong to a wait_for step"
    assert result.code == 1


def test_bad_durations_in_wait_timeout_and_expires(check):
    path, result = check("durations", """\
journey: durations
trigger: {event: signup}
steps:
  - wait: 3 dais
    send: email
    template: note
  - wait_for: {event: purchase, timeout: 2 fortnights}
  - coupon: {name: thanks, percent: 10, expires: 5 weeeks}
  - wait_for: {event: purchase, timeout: soon}
""")
    bad = "bad duration: "
    assert result.problems == [
        f"{path}:4:11: {bad}unknown unit 'dais' in duration '3 dais'",
        f"{path}:7:42: {bad}unknown unit 'fortnights' in duration '2 fortnights'",
        f"{path}:8:50: {bad}unknown unit 'weeeks' in duration '5 weeeks'",
        # no number at all: the schema's pattern says so, and that one finding is enough
        f"{path}:9:42: 'timeout' must be a duration such as 30m, 2h, 3d, 2w, 1mo",
    ], result.text
    for problem in result.problems:
        assert result.hint(problem) == "write a number and a unit, e.g. 30m, 2h, 3d, 2w, 1mo (30 days), 1y; " \
                                       "combine as 1d12h"
    assert result.code == 1


def test_wait_until_with_a_time_that_is_not_hh_mm(check):
    path, result = check("until", """\
journey: until
trigger: {event: signup}
steps:
  - wait_until: {time: 9am}
  - wait_until: {time: "25:00"}
  - exit: done
""")
    assert result.problems == [
        f"{path}:4:24: 'time' must be a time such as \"09:00\" (quoted, 24-hour clock)",
        f"{path}:4:24: time of day '9am' is not valid: write it as HH:MM in 24-hour time, like \"09:00\" or "
        "\"18:30\" (seconds optional: \"09:00:15\")",
        f"{path}:5:24: time of day '25:00' is out of range (hours 00-23, minutes and seconds 00-59): write it as "
        "HH:MM in 24-hour time, like \"09:00\" or \"18:30\" (seconds optional: \"09:00:15\")",
    ], result.text
    assert result.hint(result.problems[1]) == "write the time as 09:00 (24-hour clock, the contact's own time)"
    assert result.code == 1


def test_an_unquoted_time_is_read_as_text_under_yaml_1_2(check, lang):
    # Given `time: 9:00` without quotes: YAML 1.2 (what the loader reads) has no base-60 numbers
    path, result = check("unquoted", """\
journey: unquoted
trigger: {event: signup}
steps:
  - wait_until: {time: 9:00}
  - exit: done
""")
    # Then it is valid, and means nine in the morning
    assert result.lines == [], result.text
    from automation.language.flow import WaitUntilNode
    from automation.language.loader import load_journey

    journey, diagnostics = load_journey(Path(path), {"email": None}, None)
    assert diagnostics == [] and journey is not None
    [node] = [node for node in journey.flow.nodes.values() if isinstance(node, WaitUntilNode)]
    assert node.at == time(9, 0)


def test_an_unquoted_time_under_yaml_1_1_is_a_number_and_refused(check):
    # Given a file that asks for YAML 1.1, where an unquoted 9:00 is the base-60 number 540
    path, result = check("sexagesimal", """\
%YAML 1.1
---
journey: sexagesimal
trigger: {event: signup}
steps:
  - wait_until: {time: 9:00}
  - exit: done
""")
    # Then it is refused rather than waiting until 00:09
    assert result.problems == [
        f"{path}:6:24: 'time' must be a time such as \"09:00\" (quoted, 24-hour clock)",
    ], result.text
    assert result.code == 1


def test_bad_weekday_names(check):
    path, result = check("weekdays", """\
journey: weekdays
trigger: {event: signup}
steps:
  - wait_until: {time: "09:00", days: [mon, funday]}
  - exit: done
""")
    # Once, at the bad day itself
    assert result.problems == [f"{path}:4:45: 'days' must be a day: mon, tue, wed, thu, fri, sat or sun"], \
        result.text
    assert result.code == 1


def test_bad_offsets(check):
    path, result = check("offsets", """\
journey: offsets
trigger:
  date: contact.renewal_date
  offset: 3x
steps:
  - wait_until: {date: contact.renewal_date, offset: -36h}
  - exit: done
""")
    schema = "'offset' must be whole days or weeks before (-) or after the date, e.g. -7d or 2w"
    assert result.problems == [
        f"{path}:4:11: {schema}",
        f"{path}:4:11: bad offset: unknown unit 'x' in duration '3x'",
        f"{path}:6:54: {schema}",
        f"{path}:6:54: an offset is a whole number of days",
    ], result.text
    assert result.hint(result.problems[1]) == "an offset is whole days: -7d, 1d, 2w"
    assert result.hint(result.problems[3]) == "e.g. offset: -7d"
    assert result.code == 1


def test_wait_until_needs_a_time_or_a_date(check):
    path, result = check("until", """\
journey: until
trigger: {event: signup}
steps:
  - wait_until: {days: [mon]}
  - exit: done
""")
    assert result.problems == [f"{path}:4:17: wait_until needs a time, a date or both"], result.text
    assert result.code == 1


# -- the shape of a journey: triggers, stages, top-level keys -------------------------------------------


def test_a_trigger_has_one_kind(check):
    path, result = check("two-kinds", """\
journey: two-kinds
trigger:
  event: signup
  when: contact.plan == 'pro'
steps:
  - exit: done
""")
    assert result.problems == [f"{path}:4:3: a trigger has one kind: 'event' and 'when' are both given"], result.text
    assert result.hint(result.problems[0]) == "use a second journey for a second trigger, or a `where:` filter"
    assert result.code == 1


def test_trigger_options_that_do_not_apply_to_its_kind(check):
    path, result = check("options", """\
journey: options
trigger:
  event: signup
  journey: customer-lifecycle
  yearly: true
steps:
  - exit: done
""")
    assert result.problems == [
        f"{path}:4:3: 'journey' does not apply to a 'event' trigger",
        f"{path}:5:3: 'yearly' does not apply to a 'event' trigger",
    ], result.text
    assert result.hint(result.problems[0]) == "'journey' goes with enters or leaves"
    assert result.code == 1


def test_a_triggered_journey_needs_steps(check):
    path, result = check("no-steps", "journey: no-steps\ntrigger: {event: signup}\n")
    assert result.problems == [f"{path}:2:1: a triggered journey needs steps"], result.text
    assert result.hint(result.problems[0]) == "list what happens when the trigger fires under steps:"
    assert result.code == 1


def test_stages_and_a_trigger_together(check):
    path, result = check("both", """\
journey: both
stages:
  - name: all
trigger: {event: signup}
steps:
  - exit: done
""")
    assert result.problems == [f"{path}:4:1: a journey has either stages or a trigger, not both"], result.text
    assert result.hint(result.problems[0]) == "move the triggered steps into a journey file of their own"
    assert result.code == 1


def test_top_level_steps_without_a_trigger(check):
    path, result = check("loose", "journey: loose\nsteps:\n  - exit: done\n")
    assert result.problems == [
        f"{path}:1:1: missing 'stages' or 'trigger'",
        f"{path}:2:1: steps at the top of the file belong to a triggered journey: add a trigger",
    ], result.text
    assert result.hint(result.problems[1]) == "e.g. trigger: {event: checkout_started}"
    assert result.code == 1


def test_top_level_steps_in_a_stage_journey_are_never_run(check):
    path, result = check("staged", "journey: staged\nstages:\n  - name: all\nsteps:\n  - exit: done\n")
    assert result.problems == [f"{path}:4:1: steps at the top of a stage journey are never run"], result.text
    assert result.hint(result.problems[0]) == "put them under the stage that should run them"
    assert result.code == 1


def test_re_entry_exit_on_and_goal_belong_to_triggered_journeys(check):
    path, result = check("staged", """\
journey: staged
stages:
  - name: all
re_entry: once
exit_on:
  - event: purchase
goal: {event: purchase}
""")
    assert result.problems == [
        f"{path}:4:1: re_entry is for triggered journeys",
        f"{path}:5:1: exit_on is for triggered journeys",
        f"{path}:7:1: goal is for triggered journeys",
    ], result.text
    assert result.hint(result.problems[0]) == "a contact re-enters a stage whenever its rule holds again"
    assert result.hint(result.problems[1]) == "a stage ends when its rule stops holding"
    assert result.hint(result.problems[2]) == "put goal: on the stage it belongs to"
    assert result.code == 1


CRON_HINT = 'five fields: minute hour day-of-month month day-of-week, e.g. "0 10 * * mon"'


@pytest.mark.parametrize("schedule, message", [
    ("0 10 * * funday", "cron expression '0 10 * * funday': the day-of-week field 'funday' is not valid "
                        "(day-of-week is 0-7 or sun-sat (0 and 7 are Sunday))"),
    ("@daily", "cron shortcut '@daily' is not supported: write \"0 0 * * *\" instead"),
    ("0 10 * * * 2024", "cron expression '0 10 * * * 2024' has 6 fields, not 5 (seconds and year columns are not "
                        "supported): write 5 fields: minute hour day-of-month month day-of-week, like "
                        "\"0 9 * * mon-fri\""),
    ("0 9 30 2 *", "cron expression '0 9 30 2 *' never fires (no date matches all its fields)"),
])
def test_bad_cron_schedules(check, schedule, message):
    path, result = check("broadcast", f"""\
journey: broadcast
trigger: {{schedule: "{schedule}"}}
steps:
  - exit: done
""")
    assert result.problems == [f"{path}:2:21: {message}"], result.text
    assert result.hint(result.problems[0]) == CRON_HINT
    assert result.code == 1


@pytest.mark.parametrize("zone, hint", [
    ("Europe/Warsw", "did you mean 'Europe/Warsaw'?"),
    ("Mars/Olympus", "use an IANA name such as Europe/Warsaw, Asia/Tehran or America/New_York"),
])
def test_unknown_time_zone(check, zone, hint):
    path, result = check("zoned", f"journey: zoned\ntimezone: {zone}\nstages:\n  - name: all\n")
    assert result.problems == [f"{path}:2:11: unknown time zone {zone!r}"], result.text
    assert result.hint(result.problems[0]) == hint
    assert result.code == 1


@pytest.mark.parametrize("value, column", [("sometimes", 11), ("{afterwards: 3d}", 11), ("[once]", 11)])
def test_re_entry_must_be_once_every_time_or_a_cooldown(check, value, column):
    path, result = check("again", f"journey: again\ntrigger: {{event: signup}}\nsteps:\n  - exit: done\n"
                                  f"re_entry: {value}\n")
    assert result.problems == [f"{path}:5:{column}: re_entry must be once, every_time or {{after: 30d}}"], \
        result.text
    assert result.code == 1


def test_re_entry_cooldown_with_a_bad_duration(check):
    path, result = check("again", "journey: again\ntrigger: {event: signup}\nsteps:\n  - exit: done\n"
                                  "re_entry: {after: 2 fortnights}\n")
    assert result.problems == [f"{path}:5:19: bad duration: unknown unit 'fortnights' in duration '2 fortnights'"], \
        result.text


def test_reserved_vars_names(check):
    path, result = check("reserved", """\
journey: reserved
vars:
  brand: Acme
  event: launch
  change: big
  coupon: SAVE10
  scores: 3
stages:
  - name: all
    when: brand == 'Acme'
""")
    assert result.problems == [
        f"{path}:4:3: vars name 'event' is reserved",
        f"{path}:5:3: vars name 'change' is reserved",
        f"{path}:6:3: vars name 'coupon' is reserved",
        f"{path}:7:3: vars name 'scores' is reserved",
    ], result.text
    assert result.hint(result.problems[0]) == "rename it; 'event' already means something in rules and templates"
    assert result.code == 1


# -- steps that record things: coupon, track, set -------------------------------------------------------


def test_coupon_step_errors(check):
    path, result = check("coupons", """\
journey: coupons
trigger: {event: signup}
steps:
  - coupon: {name: both, percent: 10, amount: 5, currency: EUR}
  - coupon: {name: no-currency, amount: 5}
  - coupon: {name: Big Sale, percent: 10}
  - coupon: {name: percent-in-eur, percent: 10, currency: EUR}
  - coupon: {name: nothing}
""")
    assert result.problems == [
        f"{path}:4:13: coupon 'both': give either percent or amount, not both",
        f"{path}:5:13: coupon 'no-currency': an amount needs a currency (e.g. currency: EUR)",
        f"{path}:6:20: 'name' coupon name must be 1-32 lowercase letters, digits, '-' or '_'",
        f"{path}:7:13: coupon 'percent-in-eur': currency goes with an amount, not with a percent",
        f"{path}:8:13: coupon 'nothing' needs a percent (e.g. percent: 20) or an amount with a currency "
        "(e.g. amount: 10, currency: EUR)",
    ], result.text
    assert result.hint(result.problems[0]) == "e.g. coupon: {name: winback, percent: 20, expires: 14d}"
    assert result.code == 1


def test_track_with_a_bad_event_name(check):
    path, result = check("tracking", """\
journey: tracking
trigger: {event: signup}
steps:
  - track: "lead|qualified"
  - track: {event: ""}
""")
    schema = "track needs an event name, e.g. track: lead_qualified"
    assert result.problems == [
        f"{path}:4:12: {schema}",
        f"{path}:4:12: track: event name 'lead|qualified' contains '|' or control characters",
        f"{path}:5:12: track: event name is missing",
        f"{path}:5:20: 'event' must be an event name such as purchase",   # the mapping form, at the event
    ], result.text
    assert result.hint(result.problems[0]) == "or track: {event: lead_qualified, properties: {source: scoring}}"
    assert result.hint(result.problems[1]) == "e.g. track: lead_qualified"
    assert result.code == 1


def test_set_with_a_bad_attribute_name(check):
    path, result = check("setting", """\
journey: setting
trigger: {event: signup}
steps:
  - set: {lead-status: hot}
  - set: {email: not-an-address}
  - set: {}
""")
    assert result.problems == [
        f"{path}:4:10: set: attribute name 'lead-status' must be letters, digits and '_' (dots for nesting)",
        f"{path}:5:10: set: email 'not-an-address' is not an email address",
        f"{path}:6:10: empty 'set'",
    ], result.text
    assert result.code == 1


# -- templates and locales ------------------------------------------------------------------------------


def test_a_template_that_does_not_exist(check, lang):
    path, result = check("missing", """\
journey: missing
stages:
  - name: all
    steps:
      - send: email
        template: nothing-like-it
      - send: email
        template: notte
""")
    assert result.problems == [
        f"{path}:6:19: no template 'nothing-like-it' for channel 'email'",
        f"{path}:8:19: no template 'notte' for channel 'email'",
    ], result.text
    assert result.hint(result.problems[0]) == f"create {lang / 'templates' / 'email' / 'nothing-like-it.en.<ext>'}"
    assert result.hint(result.problems[1]) == "did you mean 'note'?"
    assert result.code == 1


def test_a_template_missing_for_the_journey_locale_falls_back_to_english(check, lang):
    # Given a template written in English and Russian only, used by a Polish journey
    for locale in ("en", "ru"):
        write(lang / "templates" / "email" / f"promo.{locale}.html", NOTE)
    path, result = check("polish", """\
journey: polish
locale: pl
stages:
  - name: all
    steps:
      - send: email
        template: promo
""")
    # Then the journey's locale line warns that its contacts get English, and _contact.yaml's locales
    # without a version are named at the step
    assert result.problems == [
        f"{path}:2:9: warning: no version in 'pl' of email/promo: it falls back to en",
        f"{path}:7:19: warning: template email/promo has no version for zh-TW, pl, fa: those contacts get the en one",
    ], result.text
    assert result.hint(result.problems[0]) == \
        f"add pl versions (e.g. {lang / 'templates' / 'email' / 'promo.pl.<ext>'}), or set locale: to one they " \
        "are written in: en, ru"
    assert result.code == 0


def test_a_template_with_neither_the_journey_locale_nor_english_is_an_error(check, lang):
    write(lang / "templates" / "email" / "promo.ru.html", NOTE)
    path, result = check("polish", """\
journey: polish
locale: pl
stages:
  - name: all
    steps:
      - send: email
        template: promo
""")
    assert result.problems[0] == f"{path}:7:19: template email/promo has no version for the journey locale 'pl'", \
        result.text
    assert result.hint(result.problems[0]) == "found: ru; add promo.pl.<ext> (the fallback for contacts " \
                                              "without a match)"
    assert result.code == 1


def test_a_template_missing_for_locales_the_sources_list_is_a_warning(check, lang):
    # Given the same template, used by an English journey, while _contact.yaml lists more locales
    for locale in ("en", "ru"):
        write(lang / "templates" / "email" / f"promo.{locale}.html", NOTE)
    path, result = check("english", """\
journey: english
stages:
  - name: all
    steps:
      - send: email
        template: promo
""")
    missing = ", ".join(locale for locale in contact_locales(lang) if locale not in ("en", "ru"))
    assert missing == "zh-TW, pl, fa"
    # Then a warning names exactly the locales whose contacts get English
    assert result.problems == [
        f"{path}:6:19: warning: template email/promo has no version for {missing}: those contacts get the en one",
    ], result.text
    assert result.hint(result.problems[0]) == "add promo.<locale>.<ext>, or take the locale out of " \
                                              "journeys/_contact.yaml"
    assert result.code == 0


# -- across journeys: stage triggers, stages[...], scores, cycles ----------------------------------------


def test_a_stage_trigger_on_a_stage_no_journey_has(check):
    path, result = check("entering", """\
journey: entering
trigger: {enters: leed}
steps:
  - exit: done
""")
    assert result.problems == [f"{path}:2:19: enters: any stage journey has no stage 'leed'"], result.text
    assert result.hint(result.problems[0]) == "did you mean 'lead'?"
    assert result.code == 1


def test_a_stage_trigger_naming_a_journey_that_does_not_exist_or_lacks_the_stage(check):
    path, result = check("leaving", """\
journey: leaving
trigger: {leaves: lead, journey: customer-lifecycl}
steps:
  - exit: done
""")
    assert result.problems == [f"{path}:2:19: leaves: no journey named 'customer-lifecycl'"], result.text
    assert result.hint(result.problems[0]) == "did you mean 'customer-lifecycle'?"

    path, result = check("leaving", """\
journey: leaving
trigger: {leaves: vip, journey: customer-lifecycle}
steps:
  - exit: done
""")
    assert result.problems == [f"{path}:2:19: leaves: journey 'customer-lifecycle' has no stage 'vip'"], result.text
    assert (result.hint(result.problems[0]) or "").startswith("stages: active, churned, "), result.text


def test_a_stage_in_two_stage_journeys_needs_journey(check, lang):
    # Given a second stage journey that also has a `lead` stage
    write(lang / "journeys" / "partners.yaml", "journey: partners\nstages:\n  - name: lead\n")
    # When a trigger names the stage alone
    path, result = check("welcome-leads", """\
journey: welcome-leads
trigger: {enters: lead}
steps:
  - exit: done
""")
    # Then it is ambiguous
    assert result.problems == [f"{path}:2:19: enters: stage 'lead' is in several journeys: customer-lifecycle, "
                               "partners"], result.text
    assert result.hint(result.problems[0]) == "name the journey: journey: customer-lifecycle"
    assert result.code == 1
    # And naming the journey settles it
    path, result = check("welcome-leads", """\
journey: welcome-leads
trigger: {enters: lead, journey: partners}
steps:
  - exit: done
""")
    assert result.lines == [], result.text


def test_stages_of_a_journey_that_does_not_exist_in_a_rule(check):
    path, result = check("looking", """\
journey: looking
stages:
  - name: unknown
    when: stages['nope'] == 'lead'
  - name: typo
    when: stages['customer-lifecycl'] == 'lead'
  - name: fine
    when: stages['customer-lifecycle'] == 'lead'
""")
    assert result.problems == [
        f"{path}:4:11: no journey named 'nope'",
        f"{path}:6:11: no journey named 'customer-lifecycl'",
    ], result.text
    assert result.hint(result.problems[0]) == "stages['<journey>'] names a stage journey"
    assert result.hint(result.problems[1]) == "did you mean 'customer-lifecycle'?"
    assert result.code == 1


SCORE = """\
journey: {name}
scores:
  lead:
    rules:
      - {{event: {event}, points: 5}}
"""


def test_a_rule_reading_a_score_nobody_defines(check, lang):
    write(lang / "journeys" / "scoring.yaml", SCORE.format(name="scoring", event="page_view"))
    path, result = check("hot", """\
journey: hot
trigger: {when: scores.leed >= 50}
steps:
  - exit: done
""")
    assert result.problems == [f"{path}:2:17: no journey defines score 'leed'"], result.text
    assert result.hint(result.problems[0]) == "did you mean 'lead'?"
    assert result.code == 1


def test_the_same_score_defined_in_two_files(capsys, lang):
    one = write(lang / "journeys" / "scoring-one.yaml", SCORE.format(name="scoring-one", event="page_view"))
    two = write(lang / "journeys" / "scoring-two.yaml", SCORE.format(name="scoring-two", event="signup"))
    for paths in ((one, two), (lang / "journeys",)):
        result = validate(capsys, lang, *paths)
        # Both definitions are errors, each at its name, naming the other file
        assert result.problems == [f"{one}:3:3: score 'lead' is also defined in {two}",
                                   f"{two}:3:3: score 'lead' is already defined in {one}"], result.text
        assert result.hint(result.problems[1]) == "a score is defined once; rename one of them"
        assert result.code == 1


def test_the_same_score_defined_in_two_files_is_found_when_one_is_checked_alone(capsys, lang):
    one = write(lang / "journeys" / "scoring-one.yaml", SCORE.format(name="scoring-one", event="page_view"))
    two = write(lang / "journeys" / "scoring-two.yaml", SCORE.format(name="scoring-two", event="signup"))
    # `lifecycle validate journeys/scoring-two.yaml` right after writing it
    result = validate(capsys, lang, two)
    assert result.code == 1, result.text
    # Told at its own name whichever file comes first
    assert any(line.startswith(f"{two}:3:3: score 'lead' is ") and line.endswith(f" defined in {one}")
               for line in result.problems), result.text


def test_the_duplicate_score_is_reported_at_its_name_whatever_the_indentation(capsys, lang):
    one = write(lang / "journeys" / "scoring-one.yaml", SCORE.format(name="scoring-one", event="page_view"))
    two = write(lang / "journeys" / "scoring-two.yaml", """\
journey: scoring-two
scores:
    lead:
        rules:
            - {event: signup, points: 5}
""")
    result = validate(capsys, lang, one, two)
    assert result.problems == [f"{one}:3:3: score 'lead' is also defined in {two}",
                               f"{two}:3:5: score 'lead' is already defined in {one}"], result.text


def test_a_journey_name_taken_by_another_file_is_found_when_one_is_checked_alone(capsys, lang):
    body = "journey: same\nstages:\n  - name: all\n"
    one = write(lang / "journeys" / "one.yaml", body)
    two = write(lang / "journeys" / "two.yaml", body)
    result = validate(capsys, lang, one)
    assert result.code == 1, result.text
    assert any(line.startswith(f"{one}:1:1: journey name 'same' is ") and line.endswith(f" used by {two}")
               for line in result.problems), result.text


PING = """\
journey: ping
trigger: {{event: pong_sent}}
steps:
  - track: ping_sent
{re_entry}"""
PONG = """\
journey: pong
trigger: {event: ping_sent}
steps:
  - track: pong_sent
"""


def test_journeys_that_trigger_each_other_without_end(capsys, lang):
    # Given ping records what starts pong, and pong records what starts ping, both every time
    ping = write(lang / "journeys" / "ping.yaml", PING.format(re_entry="re_entry: every_time\n"))
    pong = write(lang / "journeys" / "pong.yaml", PONG)
    result = validate(capsys, lang, ping, pong)
    # Then the loop is an error at the trigger of each journey in it, named from there
    assert result.problems == [f"{ping}:2:1: journeys trigger each other without end: ping -> pong -> ping",
                               f"{pong}:2:1: journeys trigger each other without end: pong -> ping -> pong"], \
        result.text
    assert result.hint(result.problems[0]) == ("give one of them re_entry: once or re_entry: {after: 1d}, "
                                               "or break the loop")
    assert result.code == 1


@pytest.mark.parametrize("re_entry", ["re_entry: once\n", "re_entry: {after: 1d}\n"])
def test_a_re_entry_limit_on_one_journey_breaks_the_loop(capsys, lang, re_entry):
    ping = write(lang / "journeys" / "ping.yaml", PING.format(re_entry=re_entry))
    pong = write(lang / "journeys" / "pong.yaml", PONG)
    result = validate(capsys, lang, ping, pong)
    assert result.lines == [], result.text
    assert result.code == 0


def test_a_loop_is_found_when_one_of_its_journeys_is_checked_alone(capsys, lang):
    write(lang / "journeys" / "ping.yaml", PING.format(re_entry=""))
    pong = write(lang / "journeys" / "pong.yaml", PONG)
    result = validate(capsys, lang, pong)
    assert result.code == 1, result.text
    assert any("journeys trigger each other without end" in line for line in result.problems), result.text


# -- what the sources send: errors against journeys/_contact.yaml -------------------------------------

SOURCES = """\
journey: sources
trigger: {event: signup}
exit_on:
  - event: refund_issued
  - when: contact.lifetme_value > 100
goal: {event: upgarde}
steps:
  - if: events.purchse.count > 0 and days_since('sigup') > 3
    send: email
    template: note
  - wait_for: {event: demo_boked, timeout: 3d}
  - set: {tier: gold, profile: {industry: retail}}
  - branch:
      - when: contact.tier == 'gold' and contact.profile.industry == 'retail' and contact.first_name
        steps:
          - track: tier_upgraded
      - when: events.tier_upgraded.count > 0 and events.lead_qualified.count > 0
        steps:
          - exit: upgraded
"""
TRACKER = """\
journey: tracker
trigger: {event: page_view}
steps:
  - track: lead_qualified
"""


def test_names_nothing_sends_are_errors_against_the_sources_file(check, lang):
    # Given another journey that records lead_qualified
    write(lang / "journeys" / "tracker.yaml", TRACKER)
    # When a journey reads misspelt attributes and events, and waits for events nothing sends
    path, result = check("sources", SOURCES)
    # Then each is an error at the rule, key or event that names it, with a did-you-mean where one is close;
    # what `set:` writes, what `track:` records (here or in another journey) and the built-ins are known
    nobody = "is not sent by any source or journey"
    assert result.problems == [
        f"{path}:4:12: event 'refund_issued' {nobody}",
        f"{path}:5:11: contact attribute 'lifetme_value' is not known",
        f"{path}:6:15: event 'upgarde' {nobody}",
        f"{path}:8:9: event 'purchse' {nobody}",
        f"{path}:8:9: event 'sigup' {nobody}",
        f"{path}:11:23: event 'demo_boked' {nobody}",
    ], result.text
    hints = [result.hint(problem) for problem in result.problems]
    assert hints == [
        "if a source sends it, add it to the events in journeys/_contact.yaml",
        "did you mean 'lifetime_value'?",
        "did you mean 'tier_upgraded'?",
        "did you mean 'purchase'?",
        "did you mean 'signup'?",
        "did you mean 'demo_booked'?",
    ]
    assert result.code == 1
    assert result.summary == "6 error(s)"


def test_a_trigger_event_nothing_sends_is_an_error(check):
    path, result = check("purchased", "journey: purchased\ntrigger: {event: purchse}\nsteps:\n  - exit: done\n")
    assert result.problems == [f"{path}:2:18: event 'purchse' is not sent by any source or journey"], \
        result.text
    assert result.code == 1
    assert result.hint(result.problems[0]) == "did you mean 'purchase'?"


def test_an_event_tracked_by_another_journey_is_known(check, lang):
    body = "journey: qualified\ntrigger: {event: lead_qualified}\nsteps:\n  - exit: done\n"
    # Without the journey that tracks it, the event is unknown ...
    path, result = check("qualified", body)
    assert result.problems == [f"{path}:2:18: event 'lead_qualified' is not sent by any source or journey"], \
        result.text
    # ... with it, it is known
    write(lang / "journeys" / "tracker.yaml", TRACKER)
    path, result = check("qualified", body)
    assert result.lines == [], result.text


def test_without_a_sources_file_these_checks_are_off(check, lang):
    # Given no journeys/_contact.yaml: the engine cannot know what a team's sources send
    (lang / "journeys" / "_contact.yaml").unlink()
    path, result = check("sources", SOURCES)
    assert result.lines == [], result.text
    assert result.code == 0


# -- every shipped journey ------------------------------------------------------------------------------


@pytest.mark.library
def test_the_shipped_journey_library_validates_without_a_single_line(capsys, project):
    result = validate(capsys, project, project / "journeys")
    assert result.lines == [], result.text
    assert result.code == 0


# -- the published JSON Schema --------------------------------------------------------------------------

STEP_KINDS = ("send", "wait", "wait_until", "wait_for", "branch", "split", "coupon", "track", "set", "exit")
TRIGGER_KINDS = ("event", "enters", "leaves", "attribute", "date", "schedule", "broadcast", "when")


def test_the_shipped_journeys_validate_against_the_schema():
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(SCHEMA)
    validator = Draft202012Validator(SCHEMA)
    shipped = sorted((ROOT / "journeys").glob("[!_]*.yaml"))
    assert len(shipped) >= 10
    for path in shipped:
        errors = [error.message for error in validator.iter_errors(YAML().load(path.read_text(encoding="utf-8")))]
        assert errors == [], f"{path.name}: {errors}"


def test_the_schema_knows_every_step_and_trigger_kind_the_loader_knows():
    from automation.language.flowbuild import KINDS
    from automation.language.loader import TRIGGER_KINDS as LOADER_TRIGGER_KINDS

    step = SCHEMA["$defs"]["step"]["properties"]
    trigger = SCHEMA["$defs"]["trigger"]["properties"]
    assert set(STEP_KINDS) == set(KINDS) | {"wait"}
    assert set(TRIGGER_KINDS) == set(LOADER_TRIGGER_KINDS)
    assert [kind for kind in STEP_KINDS if kind not in step] == []
    assert [kind for kind in TRIGGER_KINDS if kind not in trigger] == []
    # Where a kind is a mapping of its own, the schema refuses keys it does not know
    for kind in ("wait_until", "wait_for", "split", "coupon"):
        assert step[kind]["additionalProperties"] is False, kind
    assert step["branch"]["items"]["additionalProperties"] is False
    assert SCHEMA["$defs"]["step"]["additionalProperties"] is False
    assert SCHEMA["$defs"]["trigger"]["additionalProperties"] is False
    # The parametrized tests below cover each kind once, in this order
    assert [case.values[0] if hasattr(case, "marks") else case[0] for case in UNKNOWN_STEP_KEYS] == list(STEP_KINDS)
    assert [case[0] for case in UNKNOWN_TRIGGER_KEYS] == list(TRIGGER_KINDS)


# (kind, the step, where the unknown key is, the message, the hint). A kind whose value is text or a
# free mapping (send, wait, set, exit) has its unknown keys in the step around it.
UNKNOWN_STEP_KEYS = [
    ("send", "- send: email\n    template: note\n    optoins: {}", "6:5", "unknown key 'optoins' in step",
     "did you mean 'options'?"),
    ("wait", "- wait: 1d\n    iff: contact.plan == 'pro'", "5:5", "unknown key 'iff' in step", "did you mean 'if'?"),
    ("wait_until", "- wait_until: {time: \"09:00\", dyas: [mon]}", "4:33", "unknown key 'dyas' in 'wait_until'",
     "did you mean 'days'?"),
    ("wait_for", "- wait_for: {event: purchase, timeout: 1d, wher: event.properties.total > 0}", "4:46",
     "unknown key 'wher' in 'wait_for'", "did you mean 'where'?"),
    ("branch", "- branch:\n      - wen: contact.plan == 'pro'\n        steps: []", "5:9", "unknown key 'wen' in path",
     "did you mean 'when'?"),
    ("split", "- split:\n      nmae: test\n      variants:\n        - {name: a, weight: 50}\n"
              "        - {name: b, weight: 50}", "5:7", "unknown key 'nmae' in 'split'", "did you mean 'name'?"),
    ("coupon", "- coupon: {name: thanks, percent: 10, expries: 7d}", "4:41", "unknown key 'expries' in 'coupon'",
     "did you mean 'expires'?"),
    ("track", "- track: {event: lead_qualified, propertes: {source: scoring}}", "4:36",
     "unknown key 'propertes' in 'track'", "did you mean 'properties'?"),
    ("set", "- set: {tier: gold}\n    iff: contact.plan == 'pro'", "5:5", "unknown key 'iff' in step",
     "did you mean 'if'?"),
    ("exit", "- exit: done\n    descripton: bye", "5:5", "unknown key 'descripton' in step",
     "did you mean 'description'?"),
]


@pytest.mark.parametrize("kind, step, where, message, hint", UNKNOWN_STEP_KEYS, ids=list(STEP_KINDS))
def test_an_unknown_key_in_each_step_kind(check, kind, step, where, message, hint):
    assert kind in SCHEMA["$defs"]["step"]["properties"]
    path, result = check("typo", f"journey: typo\ntrigger: {{event: signup}}\nsteps:\n  {step}\n")
    assert f"{path}:{where}: {message}" in result.problems, result.text
    assert result.hint(f"{path}:{where}: {message}") == hint
    assert result.code == 1


UNKNOWN_TRIGGER_KEYS = [
    ("event", "{event: signup, wher: event.properties.source == 'ads'}", "2:26", "wher", "where"),
    ("enters", "{enters: lead, jounrey: customer-lifecycle}", "2:25", "jounrey", "journey"),
    ("leaves", "{leaves: lead, jounrey: customer-lifecycle}", "2:25", "jounrey", "journey"),
    ("attribute", "{attribute: plan, wher: change.new == 'pro'}", "2:28", "wher", "where"),
    ("date", "{date: contact.birthday, yearyl: true}", "2:35", "yearyl", "yearly"),
    ("schedule", "{schedule: '0 10 * * mon', wher: contact.plan == 'pro'}", "2:37", "wher", "where"),
    ("broadcast", "{broadcast: true, wher: contact.plan == 'pro'}", "2:28", "wher", "where"),
    ("when", "{when: contact.plan == 'pro', wher: contact.nps > 8}", "2:40", "wher", "where"),
]


@pytest.mark.parametrize("kind, trigger, where, typo, meant", UNKNOWN_TRIGGER_KEYS,
                         ids=[case[0] for case in UNKNOWN_TRIGGER_KEYS])
def test_an_unknown_key_in_each_trigger_kind(check, kind, trigger, where, typo, meant):
    assert kind in SCHEMA["$defs"]["trigger"]["properties"]
    path, result = check("typo", f"journey: typo\ntrigger: {trigger}\nsteps:\n  - exit: done\n")
    assert result.problems == [f"{path}:{where}: unknown key {typo!r} in 'trigger'"], result.text
    assert result.hint(result.problems[0]) == f"did you mean {meant!r}?"
    assert result.code == 1


# -- hints that know YAML's shape and the names a team declares ----------------------------------------

def declare(lang: Path, attributes: tuple[str, ...] = (), events: tuple[str, ...] = ()) -> None:
    """Add names to the test project's journeys/_contact.yaml."""
    yaml = YAML()
    path = lang / "journeys" / "_contact.yaml"
    sources = yaml.load(path.read_text(encoding="utf-8"))
    sources["attributes"].extend(attributes)
    sources["events"].extend(events)
    with path.open("w", encoding="utf-8") as out:
        yaml.dump(sources, out)


def test_an_undeclared_event_is_an_error_told_beside_the_others_and_the_warnings(check, lang):
    declare(lang, events=("logged_in",))
    path, result = check("inactive", """\
journey: inactive
trigger: {schedule: "0 9 * * mon"}
steps:
  - branch:
      - steps:
          - send: emial
            template: note
      - when: days_since('loged_in') >= 14
        steps:
          - exit: inactive
""")
    # The misspelt event is an error even though the file has another error, and the warning is there too
    assert result.problems == [
        f"{path}:6:19: unknown channel 'emial'",
        f"{path}:8:9: warning: this path can never be taken",
        f"{path}:8:15: event 'loged_in' is not sent by any source or journey",
    ], result.text
    assert result.hint(result.problems[2]) == "did you mean 'logged_in'?"
    # ... and the summary counts them, last, on the same stream as the findings
    assert result.summary == "2 error(s), 1 warning(s)"
    assert result.code == 1


def test_a_bad_coupon_value_is_one_finding_at_the_value(check):
    path, result = check("coupons", """\
journey: coupons
trigger: {event: signup}
steps:
  - coupon: {name: thanks, percent: 20%}
  - coupon: {name: later, percent: 10, prefix: "WB-2026"}
""")
    assert result.problems == [
        f"{path}:4:37: 'percent' must be a number above 0 and at most 100, without %, or vars.<name>",
        f"{path}:5:48: 'prefix' must be at most 8 letters or digits",
    ], result.text
    assert result.hint(result.problems[0]) == ("e.g. percent: 20, or percent: vars.discount for the value a split "
                                               "variant sets")
    assert result.hint(result.problems[1]) == "the code starts with it: prefix: WB gives WB-7KQ9XP3MA2"


UNNAMED_SPLIT = """\
  - split:
      variants:
        - {name: a, weight: 50, steps: [{send: email, template: note}]}
        - {name: b, weight: 50, holdout: true}
"""


def test_a_split_without_a_name_is_an_error_with_a_name_to_give_it(check):
    path, result = check("promo", "journey: promo\ntrigger: {event: signup}\nsteps:\n"
                         + UNNAMED_SPLIT + UNNAMED_SPLIT.replace("50", "40"))
    assert result.problems == [
        f"{path}:4:5: this split has no name",
        f"{path}:8:5: this split has no name",
        f"{path}:10:9: the weights of this split add up to 80, not 100",
    ], result.text
    hint = "every split needs a name, which files its results: add  name: promo-split-{}"
    assert result.hint(result.problems[0]) == hint.format(1)
    assert result.hint(result.problems[1]) == hint.format(2)


def test_an_unnamed_split_in_a_stage_gets_a_name_with_the_stage(check):
    steps = UNNAMED_SPLIT.replace("\n  ", "\n      ").replace("  - split", "      - split", 1)
    path, result = check("funnel", "journey: funnel\nstages:\n  - name: lead\n    steps:\n" + steps)
    assert result.problems == [f"{path}:5:9: this split has no name"], result.text
    assert result.hint(result.problems[0]).endswith("add  name: funnel-lead-split-1")


def test_a_key_one_level_too_deep_says_where_it_belongs(check):
    path, result = check("waits", """\
journey: waits
trigger: {event: signup}
steps:
  - wait_for:
      event: purchase
      timeout: 3d
      on_timeout:
        - exit: gave_up
""")
    assert result.problems == [f"{path}:7:7: unknown key 'on_timeout' in 'wait_for'"], result.text
    assert result.hint(result.problems[0]) == \
        "'on_timeout' belongs to the step: move it to the indentation of 'wait_for' (line 4)"


def test_a_key_one_level_too_shallow_says_where_it_belongs(check):
    path, result = check("waits", """\
journey: waits
trigger: {event: signup}
steps:
  - wait_for: {event: purchase}
    timeout: 3d
  - wait_for:
    event: purchase
    timeout: 1d
""")
    # Only the misplaced keys are told: not the timeout missing from the wait_for, nor an empty wait_for
    assert result.problems == [
        f"{path}:5:5: unknown key 'timeout' in step",
        f"{path}:7:5: unknown key 'event' in step",
        f"{path}:8:5: unknown key 'timeout' in step",
    ], result.text
    assert [result.hint(problem) for problem in result.problems] == [
        "'timeout' belongs to 'wait_for': move it inside the braces of 'wait_for' (line 4)",
        "'event' belongs to 'wait_for': indent it under 'wait_for' (line 6)",
        "'timeout' belongs to 'wait_for': indent it under 'wait_for' (line 6)",
    ]


def test_a_template_name_that_starts_a_longer_one_suggests_it(check, lang):
    for locale in contact_locales(lang):
        write(lang / "templates" / "email" / f"nps-survey.{locale}.html", NOTE)
    path, result = check("nps", "journey: nps\ntrigger: {event: purchase}\nsteps:\n"
                                "  - send: email\n    template: nps\n")
    assert result.problems == [f"{path}:5:15: no template 'nps' for channel 'email'"], result.text
    assert result.hint(result.problems[0]) == "did you mean 'nps-survey'?"


def test_a_declared_name_read_without_its_prefix_suggests_the_qualified_name(check, lang):
    declare(lang, attributes=("trial_ends_at",))
    path, result = check("trial", """\
journey: trial
trigger: {date: trial_ends_at, offset: -3d}
steps:
  - if: purchase
    send: email
    template: note
""")
    assert result.problems == [
        f"{path}:2:17: unknown name 'trial_ends_at' in expression",
        f"{path}:4:9: unknown name 'purchase' in expression",
    ], result.text
    assert result.hint(result.problems[0]) == "did you mean 'contact.trial_ends_at'?"
    assert result.hint(result.problems[1]) == "did you mean events.purchase.count or days_since('purchase')?"


@pytest.mark.parametrize("word, meant", [("yes", "true"), ("off", "false")])
def test_yaml_yes_no_on_off_in_a_rule_suggest_true_or_false(check, word, meant):
    path, result = check("vip", f"journey: vip\ntrigger: {{event: purchase}}\nsteps:\n"
                                f"  - if: contact.seasonal == {word}\n    exit: seasonal\n")
    assert result.problems == [f"{path}:4:9: unknown name {word!r} in expression"], result.text
    assert result.hint(result.problems[0]) == \
        f"did you mean {meant!r}? rules write true and false, not yes/no or on/off"
