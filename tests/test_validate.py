"""`lifecycle validate`: every error class, each at its exact path:line:col, all in one run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from automation.ops.cli import main
from tests.conftest import write

ROOT = Path(__file__).resolve().parent.parent


#: The last line `validate` prints, after the findings and on the same stream.
SUMMARY = re.compile(r"(\d+ journey\(s\) OK|\d+ error\(s\))(, \d+ warning\(s\))?")


def validate(capsys, *args: str) -> tuple[int, list[str]]:
    """The exit code and the findings printed (the summary line after them is checked and left off)."""
    code = main(["validate", *args])
    lines = capsys.readouterr().out.splitlines()
    assert lines and SUMMARY.fullmatch(lines[-1]), lines
    return code, lines[:-1]


def error_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("    hint:") and ": warning: " not in line]


def test_the_shipped_journeys_and_templates_are_valid(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, lines = validate(capsys)
    assert code == 0, "\n".join(lines)
    assert lines == []


BROKEN = """\
journey: broken
stages:
  - name: lead
    when: "events.purchase.count >"
    steps:
      - send: emial
        template: welcome
      - wait: 3 dais
        send: email
        template: welcom
      - send: email
        tempalte: welcome
  - description: a stage without a name
    steps:
      - send: sms
  - name: lapsed
    when: evnts.purchase.count > 0
    steps:
      - send: email
        template: broken-one
"""


@pytest.fixture
def broken_project(project: Path) -> Path:
    write(project / "journeys" / "broken.yaml", BROKEN)
    write(project / "templates" / "email" / "broken-one.en.html",
          "{% block subject %}Hi{% endblock %}\n{% block html %}\n{% if first_name %}\nHello\n{% endblock %}\n")
    return project


def test_every_error_is_reported_with_its_position_and_a_hint(capsys, broken_project):
    path = broken_project / "journeys" / "broken.yaml"
    template = broken_project / "templates" / "email" / "broken-one.en.html"
    code, lines = validate(capsys, str(path), "--templates", str(broken_project / "templates"))
    assert code == 1
    text = "\n".join(lines)
    expected = [
        f"{path}:4:11: expression does not compile: unexpected 'end of template'",
        f"{path}:6:15: unknown channel 'emial'",
        f"{path}:8:15: bad duration: unknown unit 'dais' in duration '3 dais'",
        f"{path}:10:19: no template 'welcom' for channel 'email'",
        f"{path}:11:9: 'send' needs 'template' in the same step",
        f"{path}:12:9: unknown key 'tempalte' in step",
        f"{path}:13:5: missing required key 'name' in stage",
        f"{path}:15:9: 'send' needs 'template' in the same step",
        f"{path}:17:11: unknown name 'evnts' in expression",
    ]
    for line in expected:
        assert line in error_lines(lines), f"missing {line!r} in:\n{text}"
    assert any(line.startswith(f"{template}:5:1: template syntax error: Encountered unknown tag 'endblock'")
               for line in lines), text
    assert len(error_lines(lines)) == len(expected) + 1, text
    assert "hint: did you mean 'email'?" in text
    assert "hint: did you mean 'welcome'?" in text
    assert "hint: did you mean 'template'?" in text
    assert "hint: did you mean 'events'?" in text
    assert "hint: write a number and a unit" in text


def test_yaml_syntax_errors_point_at_the_problem(capsys, project):
    path = write(project / "journeys" / "syntax.yaml",
                 "journey: syntax\nstages:\n  - name: lead\n    steps: [\n      - send: email\n")
    code, lines = validate(capsys, str(path), "--templates", str(project / "templates"))
    assert code == 1
    assert lines[0].startswith(f"{path}:5:7: YAML syntax error:"), lines


def test_duplicate_keys_are_syntax_errors(capsys, project):
    path = write(project / "journeys" / "dup.yaml", "journey: dup\njourney: again\nstages: []\n")
    code, lines = validate(capsys, str(path), "--templates", str(project / "templates"))
    assert code == 1
    assert lines[0].startswith(f"{path}:2:1: YAML syntax error: found duplicate key"), lines


def test_missing_top_level_keys_and_wrong_types(capsys, project):
    path = write(project / "journeys" / "bare.yaml", "description: no name, no stages\nvars: [1, 2]\n")
    code, lines = validate(capsys, str(path), "--templates", str(project / "templates"))
    assert code == 1
    assert f"{path}:1:1: missing required key 'journey' in the journey" in lines
    assert f"{path}:1:1: missing 'stages' or 'trigger'" in lines
    assert f"{path}:2:7: 'vars' must be a mapping of keys" in lines


def test_stage_after_a_catch_all_is_unreachable_warning(capsys, project):
    path = write(project / "journeys" / "order.yaml", """\
journey: order
stages:
  - name: everyone
  - name: buyers
    when: events.purchase.count > 0
""")
    code, lines = validate(capsys, str(path), "--templates", str(project / "templates"))
    assert code == 0  # a warning, not an error
    assert f"{path}:4:11: warning: stage 'buyers' can never be reached" in lines
    assert main(["validate", "--strict", str(path), "--templates", str(project / "templates")]) == 1


def test_missing_template_file_and_missing_default_locale(capsys, project):
    write(project / "templates" / "email" / "only-russian.ru.html",
          "{% block subject %}Привет{% endblock %}{% block html %}<p>Привет</p>{% endblock %}")
    path = write(project / "journeys" / "locale.yaml", """\
journey: locale
stages:
  - name: all
    steps:
      - send: email
        template: only-russian
""")
    code, lines = validate(capsys, str(path), "--templates", str(project / "templates"))
    assert code == 1
    assert f"{path}:6:19: template email/only-russian has no version for the journey locale 'en'" in lines


def test_template_without_required_parts(capsys, project):
    write(project / "templates" / "email" / "no-subject.en.html", "{% block html %}<p>Hi</p>{% endblock %}")
    path = write(project / "journeys" / "parts.yaml", """\
journey: parts
stages:
  - name: all
    steps:
      - send: email
        template: no-subject
""")
    template = project / "templates" / "email" / "no-subject.en.html"
    code, lines = validate(capsys, str(path), "--templates", str(project / "templates"))
    assert code == 1
    assert f"{template}:1:1: email template has no 'subject' block" in lines


def test_json_output_for_editors_and_ci(capsys, broken_project):
    import json

    path = broken_project / "journeys" / "broken.yaml"
    main(["validate", str(path), "--templates", str(broken_project / "templates"), "--format", "json"])
    items = json.loads(capsys.readouterr().out)
    assert {"path": str(path), "line": 6, "column": 15, "severity": "error",
            "message": "unknown channel 'emial'", "hint": "did you mean 'email'?"} in items


def test_duplicate_journey_names_across_files(capsys, project):
    body = "journey: {name}\nstages:\n  - name: all\n"
    write(project / "journeys" / "one.yaml", body.format(name="same"))
    write(project / "journeys" / "two.yaml", body.format(name="same"))
    code, lines = validate(capsys, str(project / "journeys" / "one.yaml"), str(project / "journeys" / "two.yaml"),
                           "--templates", str(project / "templates"))
    assert code == 1
    assert any("journey name 'same' is already used by" in line for line in lines)


def test_the_published_schema_is_valid_and_accepts_the_shipped_journeys():
    from jsonschema import Draft202012Validator
    from ruamel.yaml import YAML

    from automation.language.loader import SCHEMA

    Draft202012Validator.check_schema(SCHEMA)
    for path in (ROOT / "journeys").glob("[!_]*.yaml"):
        assert list(Draft202012Validator(SCHEMA).iter_errors(YAML().load(path.read_text()))) == []


def test_the_schema_the_shipped_journeys_name_for_editors_exists():
    # Editors (yaml-language-server) complete and check a journey from the schema its first line names.
    named = {}
    for path in sorted((ROOT / "journeys").glob("*.yaml")):
        match = re.search(r"yaml-language-server: \$schema=(\S+)", path.read_text())
        if match:
            named[path.name] = (path.parent / match.group(1)).resolve()
    assert len(named) >= 10
    assert {name: target for name, target in named.items() if not target.is_file()} == {}
