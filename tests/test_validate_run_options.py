"""`lifecycle validate` on `if_past`, `once` and the `vars` of split variants, each mistake at its
exact path:line:col (the language's other constructs: tests/test_validate_language.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, write
from tests.test_validate_language import checker, contact_locales, validate, with_note

SPLIT = """\
journey: offer
trigger: {{event: signup}}
steps:
  - split:
      name: discount
      variants:
        - name: big
          weight: 45
          vars: {{discount: {big}}}
        - name: small
          weight: 45
          vars: {{discount: 10}}
        - name: holdout
          weight: 10
          holdout: true
{after}"""


@pytest.fixture
def check(capsys, project: Path):
    """As tests/test_validate_language.py's, plus templates `deal` and `typo` that print vars.discount
    (`typo` misspells it in one locale)."""
    for locale in contact_locales(with_note(project)):
        for name, typo in (("deal", "discount"), ("typo", "discout" if locale == "pl" else "discount")):
            write(project / "templates" / "email" / f"{name}.{locale}.html",
                  "{% block subject %}{{ vars.discount }}% off{% endblock %}\n"
                  f"{{% block html %}}<p>{{{{ vars.{typo} }}}}% off</p>{{% endblock %}}\n")
    return checker(capsys, project)


def test_if_past_takes_skip_or_send_now_and_needs_a_date(check):
    path, result = check("remind", """\
journey: remind
trigger: {event: signup}
steps:
  - wait_until: {date: contact.renewal_date, offset: -3d, if_past: later}
  - send: email
    template: note
  - wait_until: {time: "10:00", if_past: skip}
  - send: email
    template: note
""")
    assert result.problems == [
        f"{path}:4:68: 'if_past' must be skip or send_now",
        f"{path}:7:42: if_past is for waits until a date",
    ], result.text
    assert result.code == 1


def test_once_is_a_yes_or_no_on_a_step_that_does_something(check):
    path, result = check("thanks", """\
journey: thanks
trigger: {event: purchase}
steps:
  - send: email
    template: note
    once: yes please
  - wait: 1d
    once: true
  - send: email
    template: note
    once: true
""")
    assert result.problems == [
        f"{path}:6:11: 'once' must be true or false",
        f"{path}:8:11: once is for steps that do something, not for wait",
    ], result.text
    assert result.hint(result.problems[1]) == "put once: true on the send, coupon, track or set step itself"


def test_a_vars_name_no_variant_sets_is_an_error_where_it_is_used(check):
    path, result = check("offer", SPLIT.format(big=20, after="""\
  - coupon: {name: deal, percent: vars.discont, prefix: D}
  - if: vars.discount > 15 and vars.tier == 'gold'
    send: email
    template: note
  - send: email
    template: typo
"""))
    templates = Path(path).parent.parent / "templates"
    assert result.problems == [
        f"{path}:16:35: 'vars.discont' is set by no split variant, nor by the journey's vars",
        f"{path}:17:9: 'vars.tier' is set by no split variant, nor by the journey's vars",
        f"{path}:21:15: template {templates}/email/typo.pl.html uses 'vars.discout', which no split variant "
        "sets, nor the journey's vars",
    ], result.text
    assert result.hint(result.problems[0]) == "did you mean 'discount'?"
    assert result.hint(result.problems[1]) == ("add vars: {tier: ...} to the variants of a split before this step "
                                               "(or to the journey's vars)")
    assert result.code == 1


def test_every_value_a_variant_gives_a_coupon_must_make_a_valid_coupon(check):
    path, result = check("offer", SPLIT.format(big=120, after="""\
  - coupon: {name: deal, percent: vars.discount, prefix: D}
  - coupon: {name: other, percent: discount, prefix: O}
  - coupon: {name: third, percent: 120, prefix: T}
  - send: email
    template: note
"""))
    assert result.problems == [
        f"{path}:16:35: coupon 'deal': percent must be more than 0 and at most 100, not 120 (vars.discount = 120)",
        f"{path}:17:36: 'percent' must be a number above 0 and at most 100, without %, or vars.<name>",
        f"{path}:18:36: 'percent' must be a number above 0 and at most 100, without %",
    ], result.text
    assert result.hint(result.problems[0]) == ("each value the journey's vars and its split variants give "
                                               "vars.discount must be a valid percent")
    assert result.hint(result.problems[1]) == ("e.g. percent: 20, or percent: vars.discount for the value a split "
                                               "variant sets")
    assert result.code == 1


def test_variant_vars_used_by_the_shared_steps_are_valid(check):
    path, result = check("offer", SPLIT.format(big=20, after="""\
  - coupon: {name: deal, percent: vars.discount, prefix: D}
  - if: vars.discount >= 10
    send: email
    template: deal
"""))
    assert result.lines == [], result.text


def test_the_modelling_patterns_in_the_docs_validate(capsys, project: Path):
    # Every complete journey in docs/journeys.md's "Modelling patterns" validates with the shipped templates
    text = (ROOT / "docs" / "journeys.md").read_text(encoding="utf-8")
    section = text[text.index("## Modelling patterns"):text.index("## Measuring results")]
    examples = [block for block in re.findall(r"```yaml\n(.*?)```", section, re.S) if block.startswith("journey:")]
    assert len(examples) == 4
    names = [re.match(r"journey: ([\w-]+)", block).group(1) for block in examples]
    paths = [write(project / "journeys" / f"{name}.yaml", block) for name, block in zip(names, examples, strict=True)]
    result = validate(capsys, project, *paths)
    assert (result.code, result.lines) == (0, []), result.text


def test_options_read_from_vars_are_checked_for_every_value(check):
    path, result = check("offer", """\
journey: offer
trigger: {event: signup}
vars: {crm: "https://crm.example.com/hook"}
steps:
  - split:
      name: crm
      variants:
        - {name: old, weight: 50, vars: {crm: "ftp://old.example.com"}}
        - {name: new, weight: 50}
  - send: webhook
    id: notify
    url: vars.crm
  - send: webhook
    id: notify-again
    url: vars.crn
""")
    assert result.problems == [
        f"{path}:12:10: a webhook step needs url: https://... (vars.crm = 'ftp://old.example.com')",
        f"{path}:15:10: 'vars.crn' is set by no split variant, nor by the journey's vars",
    ], result.text
    assert result.hint(result.problems[0]) == ("each value the journey's vars and its split variants give vars.crm "
                                               "must be a valid url")
    assert result.hint(result.problems[1]) == "did you mean 'crm'?"


def test_an_option_not_every_run_has_a_value_for_is_a_warning_where_it_is_read(check):
    path, result = check("offer", """\
journey: offer
trigger: {event: signup}
steps:
  - send: webhook
    id: too-early
    url: vars.crm
  - split:
      name: crm
      variants:
        - name: old
          weight: 45
          vars: {crm: "https://old.example.com/hook"}
          steps:
            - send: webhook
              id: notify-old
              url: vars.crm
        - {name: none, weight: 45}
        - {name: holdout, weight: 10, holdout: true}
  - send: webhook
    id: notify
    url: vars.crm
  - split:
      name: again
      variants:
        - {name: a, weight: 50, vars: {crm: "https://a.example.com/hook"}}
        - {name: b, weight: 50, vars: {crm: "https://b.example.com/hook"}}
  - send: webhook
    id: notify-later
    url: vars.crm
""")
    # Before any split sets it, and after a split one of whose variants does not: warned. Inside the
    # variant that sets it, and after a split all of whose variants do (the holdout never gets there): fine.
    warning = "warning: not every run that reaches this step has vars.crm: the step fails for those that do not"
    assert result.problems == [f"{path}:6:10: {warning}", f"{path}:21:10: {warning}"], result.text
    assert result.hint(result.problems[0]) == ("set vars: {crm: ...} in every variant of a split before this step, "
                                               "or give it a default in the journey's vars")
    assert result.code == 0
