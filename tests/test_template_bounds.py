"""Templates and rules are bounded: a huge range, repetition, join or power is refused, a render or rule
stops at its time and output budget, a step over budget fails alone, and `lifecycle validate` points at
unsafe attributes and removed globals."""

from __future__ import annotations

from pathlib import Path

import pytest

from automation.api import Lifecycle
from automation.config import Settings
from automation.channels import ChannelRegistry
from automation.errors import ConfigError, ExpressionError, RuleError, TemplateRenderError
from automation.expressions import compile_rule
from automation.messages.templates import Renderer, TemplateCatalog, TemplateLimitError
from automation.ops.cli import main
from automation.ops.deploys import file_candidates
from automation.ops.preview import Workbench
from automation.sandbox import RenderBudget
from tests.conftest import outbox_files, write

#: Ten thousand loops of ten thousand: every range is allowed, the whole is far over any budget.
NESTED = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"


#: Lists of lists, each level ten of the one below: eight levels hold 10^8 zeros in a few objects.
NESTED_REPEAT = "".join(f"{{% set l{i + 1} = [l{i}] * 10 %}}" for i in range(8)).replace("[l0]", "[0]") \
    + "{{ l8 | string | length }}"
#: A list holding the one before twice, thirty times over: 2^30 zeros in 31 lists, no `*` at all.
DAG = "{% set ns = namespace(l=[0]) %}{% for i in range(30) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}"


DOUBLED = "{% set ns = namespace(s='ab') %}{% for i in range(21) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}"


def render(tmp_path: Path, body: str, budget: RenderBudget | None = None) -> str:
    write(tmp_path / "sms" / "t.en.txt", body)
    return Renderer(TemplateCatalog(tmp_path), budget=budget).render("sms", "t", "en", "en", {}).parts["body"]


@pytest.mark.parametrize("body, fine, reason", [
    ("{{ range(10001) | length }}", "{{ range(10000) | length }}", "range of 10001 items"),
    ("{{ 'ab' * 500001 }}", "{{ 'ab' * 3 }}", "repetition would make 1000002 items"),
    ("{{ [0] * 2000000 }}", "{{ [0] * 2 }}", "repetition would make 2000000 items"),
    ("{{ 2 ** 100000 }}", "{{ 2 ** 64 }}", "has more than 4096 bits"),
    # What takes a width: filters, printf and str.format specs (written or passed in), str methods
    ("{{ 'a' | center(10 ** 8) }}", "{{ 'a' | center(9) }}", "center would make 100000000 characters"),
    ("{{ '%999999999s' | format('a') }}", "{{ '%5s' | format('a') }}", "the format '%999999999'"),
    ("{{ '%*d' % (10 ** 8, 1) }}", "{{ '%*d' % (3, 1) }}", "a width taken from the values"),
    ("{{ '{:>{}}'.format('a', 10 ** 8) }}", "{{ '{:>{}}'.format('a', 3) }}", "a width taken from the values"),
    ("{{ 'a'.ljust(10 ** 8) }}", "{{ 'a'.ljust(3) }}", r"ljust\(\) would make 100000000 characters"),
    ("{{ ('x' * 10000).replace('x', 'yyyyyyyyyy' * 100) }}", "{{ 'axa'.replace('x', 'yy') }}",
     r"replace\(\) would make 10000000 characters"),
    # A string doubled in a loop
    (DOUBLED.replace("+", "~"), DOUBLED.replace("+", "~").replace("21", "3"), "joining with ~ would make 1048576"),
    (DOUBLED, DOUBLED.replace("21", "3"), r"adding with \+ would make 1048576"),
    # Joining: the separator counts once between every two parts, before the string is made
    ("{{ range(1000) | join('x' * 500000) }}", "{{ range(3) | join('x' * 5) }}",
     "join would make 499500000 characters"),
    ("{{ ('x' * 500000).join(range(1000) | map('string')) }}", "{{ '-'.join(['a', 'b']) }}",
     r"join\(\) would make 499500000 characters"),
    ("{% set big = 'x' * 600000 %}{{ [{'n': big}, {'n': big}] | join(attribute='n') }}",
     "{% set big = 'x' * 6 %}{{ [{'n': big}, {'n': big}] | join(attribute='n') }}",
     "join would make 1200000 characters"),
    # Lists in lists: all they hold counts, repeated or printed
    (NESTED_REPEAT, NESTED_REPEAT.replace("] * 10", "] * 2"), "repetition would make 1234560 items"),
    ("{{ ['x' * 5000] * 1000 }}", "{{ ['x' * 5] * 1000 }}", "repetition would make 5005000 items"),
    (DAG + "{{ ns.l }}", DAG.replace("30", "3") + "{{ ns.l }}", "printing a list would make 1572874 characters"),
    (DAG + "{{ ns.l | string }}", DAG.replace("30", "3") + "{{ ns.l | string }}", "string would make 1572874"),
    (DAG + "{{ ns.l | tojson }}", DAG.replace("30", "3") + "{{ ns.l | tojson }}", "tojson would make 1572874"),
    ("{{ [1] | slice(100000000) | list | length }}", "{{ [1] | slice(2) | list | length }}",
     "slice into 100000000 parts"),
    # Filters slow per character: refused a text that one call could not get through within the budget
    ("{{ ('word ' * 40000) | urlize | length }}", "{{ ('word ' * 20000) | urlize | length }}",
     "urlize of 200,000 characters: a template may give it at most 100,000"),
    ("{{ ('word ' * 50000) | wordwrap(20) | length }}", "{{ ('word ' * 40000) | wordwrap(20) | length }}",
     "wordwrap of 250,000 characters"),
    ("{{ ('word ' * 70000) | title | length }}", "{{ ('word ' * 60000) | title | length }}",
     "title of 350,000 characters"),
    ("{{ ('word ' * 40000).split() | urlize | length }}", "{{ ('word ' * 10000).split() | urlize | length }}",
     "urlize of 100,0[0-9][0-9] characters: a template may give it at most 100,000"),
])
def test_a_huge_range_repetition_or_power_fails_the_render_with_the_reason(tmp_path, body, fine, reason):
    assert render(tmp_path, fine)
    with pytest.raises(TemplateLimitError, match=reason):
        render(tmp_path, body)


@pytest.mark.parametrize("body", [
    "{% for i in range(1000) %}{{ i }} {% endfor %}",    # many small chunks: only their sum is over
    "{% for i in range(1500) %}é{% endfor %}",           # 1,500 characters, 3,000 bytes
])
def test_output_over_the_size_budget_stops_the_render(tmp_path, body):
    with pytest.raises(TemplateLimitError, match=r"template 'sms/t' exceeded its output budget \(2000 bytes\)"):
        render(tmp_path, body, RenderBudget(max_bytes=2000))
    assert len(render(tmp_path, body, RenderBudget(max_bytes=100_000)).encode()) > 2000


def test_loops_that_print_nothing_stop_at_the_time_budget(tmp_path):
    with pytest.raises(TemplateLimitError, match=r"template 'sms/t' exceeded its render budget \(10 ms\)"):
        render(tmp_path, NESTED, RenderBudget(time_ms=10))
    # Loops over a long string, not a range, watch the clock too
    with pytest.raises(TemplateLimitError, match="exceeded its render budget"):
        render(tmp_path, "{% set s = 'x' * 9999 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
               RenderBudget(time_ms=10))
    # And calls: a macro that calls itself twice, 2^21 calls without a loop
    with pytest.raises(TemplateLimitError, match="exceeded its render budget"):
        render(tmp_path, "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(20) }}",
               RenderBudget(time_ms=10))


def test_lipsum_is_not_there(tmp_path):
    # `lipsum(n)` makes n paragraphs in one call, and no clock can stop one call
    with pytest.raises(TemplateRenderError, match="'lipsum' is undefined"):
        render(tmp_path, "{{ lipsum(200000) }}")
    with pytest.raises(ExpressionError, match="unknown name 'lipsum'"):
        compile_rule("lipsum(100000) | length > 0")
    # The other globals make no more than they are given
    assert render(tmp_path, "{{ dict(a=1).a }}{{ cycler('b', 'c').next() }}"
                  "{% set j = joiner('-') %}{{ j() }}{{ j() }}{{ namespace(d='d').d }}") == "1b-d"


def test_rules_share_the_bounds():
    with pytest.raises(RuleError, match="range of 100000 items"):
        compile_rule("range(100000) | length > 1").evaluate({})
    with pytest.raises(RuleError, match="more than 4096 bits"):
        compile_rule("9 ** 99999 > 1").evaluate({})
    with pytest.raises(RuleError, match="join would make 499500000 characters"):
        compile_rule("range(1000) | join('x' * 500000) | length > 0").evaluate({})
    assert compile_rule("(2 ** 10) * 3 > 3000").evaluate({})


def test_a_rule_stops_at_its_time_budget():
    # Each filter call is bounded by its input, a chain of them is not: every call looks at the clock
    rule = compile_rule("(' x' * 75000)" + " | wordwrap(2)" * 20 + " | length > 0")
    with pytest.raises(RuleError, match=r"exceeded its rule budget \(100 ms\)"):
        rule.evaluate({})
    assert compile_rule("(' x' * 10)" + " | wordwrap(2)" * 20 + " | length > 0").evaluate({})


def test_the_budget_is_read_from_the_environment_and_passed_on():
    settings = Settings.from_env({"LIFECYCLE_TEMPLATE_TIME_MS": "50", "LIFECYCLE_TEMPLATE_MAX_BYTES": "2000"})
    assert RenderBudget.of(settings) == RenderBudget(50, 2000)
    assert RenderBudget.of(Settings.from_env(settings.to_env())) == RenderBudget(50, 2000)   # to worker processes
    with pytest.raises(ConfigError, match="LIFECYCLE_TEMPLATE_MAX_BYTES=10 must be at least 1000"):
        Settings.from_env({"LIFECYCLE_TEMPLATE_MAX_BYTES": "10"})


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_changes(template_time_ms=50)


LOOPS_SMS = """journey: loops-sms
vars: {brand: Northwind}
trigger: {event: ping}
steps:
  - send: sms
    template: loops
"""


def test_a_step_over_budget_fails_alone_and_the_batch_goes_on(runtime, make_engine, run_due, settings):
    # Given an SMS whose work depends on the contact: 10^8 loop steps for one, 4 for the other
    (settings.journeys_dir / "customer-lifecycle.yaml").unlink()
    write(settings.templates_dir / "sms" / "loops.en.txt",
          "{{ brand }}{% for i in range(contact.n) %}{% for j in range(contact.n) %}{% endfor %}{% endfor %}: hi")
    write(settings.journeys_dir / "loops-sms.yaml", LOOPS_SMS)
    engine = make_engine()
    lc = Lifecycle(runtime)
    for contact_id, n in (("heavy", 10000), ("light", 2)):
        lc.identify(contact_id, {"phone": "+14155550100", "n": n, "consent": {"sms": True}})
    # When both steps fall due in one batch
    lc.track("heavy", "ping", {})
    lc.track("light", "ping", {})
    run_due(engine)
    # Then the heavy one fails with the reason, and the light one is sent
    heavy = lc.history("heavy")["loops-sms:run:1:loops"]
    assert heavy["state"] == "failed" and heavy["code"] == "template_error"
    assert "template 'sms/loops' exceeded its render budget (50 ms)" in heavy["reason"]   # the configured one
    assert lc.history("light")["loops-sms:run:1:loops"]["state"] == "sent"
    sent = outbox_files(settings.outbox_dir, "sms")
    assert len(sent) == 1 and "Northwind: hi" in sent[0].read_text(encoding="utf-8")


PEEK = """{{ brand }}: hello {{ first_name }}
{{ contact.__class__ }} and {{ contact['mro'] }}
  {{ first_name | attr('_secret') }} {{ contact.email }}
{{ lipsum(2) }} {% set lorem = 'ipsum' %}{{ lorem }}
"""


def test_validate_reports_unsafe_attributes_and_budget_overruns_at_file_line_col(project: Path, capsys):
    write(project / "templates" / "sms" / "peek.en.txt", PEEK)
    write(project / "templates" / "sms" / "spin.en.txt", NESTED)
    journey = write(project / "journeys" / "peek.yaml", LOOPS_SMS.replace("loops-sms", "peek")
                    .replace("template: loops", "template: peek\n  - send: sms\n    template: spin"))
    code = main(["validate", str(journey), "--templates", str(project / "templates")])
    out = capsys.readouterr().out
    assert code == 1
    peek = project / "templates" / "sms" / "peek.en.txt"
    for where, name in (("2:12", "__class__"), ("2:41", "mro"), ("3:25", "_secret")):
        assert f"{peek}:{where}: unsafe attribute access {name!r}" in out, out
    assert out.count("unsafe attribute access") == 3   # not contact.email
    assert "hint: print the data itself ({{ contact.email }})" in out
    assert f"{peek}:4:4: 'lipsum' is not available: it can make any amount of text in one call" in out
    spin = project / "templates" / "sms" / "spin.en.txt"
    assert f"{spin}:1:1: template 'sms/spin' exceeded its render budget (100 ms), rendered with sample data" in out


def test_previews_test_sends_and_deploys_use_the_configured_budget(settings):
    # Given a journey whose template spins, and a render budget of 50 ms (the fixture's)
    write(settings.templates_dir / "sms" / "spin.en.txt", NESTED)
    write(settings.journeys_dir / "spin.yaml", LOOPS_SMS.replace("loops-sms", "spin").replace("loops", "spin"))
    # Then `preview`/`test-send` (the workbench) and `deploy` (file_candidates) report the configured one
    bench = Workbench.open(settings)
    try:
        assert any("exceeded its render budget (50 ms)" in d.message for d in bench.errors), bench.errors
    finally:
        bench.close()
    channels = ChannelRegistry(settings)
    try:
        _, problems = file_candidates(settings, channels, [])
    finally:
        channels.close()
    assert any("exceeded its render budget (50 ms)" in d.message for d in problems), problems
