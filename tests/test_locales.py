"""Locale negotiation (BCP 47): one answer for templates, defaults.yaml and the unsubscribe page.

Every case runs against the shipped templates (en, ru, zh-TW, pl, fa) through the real catalog and
renderer, the engine (contacts in Redis, the outbox), the unsubscribe page's WSGI app and
`lifecycle validate`.
"""

from __future__ import annotations

import email
import email.policy
import json
import shutil
from typing import Any

import pytest
import requests

from automation.api import Lifecycle
from automation.messages.locales import negotiate, text_direction
from automation.messages.templates import Renderer, TemplateCatalog
from automation.messages.unsubscribe import make_token
from automation.ops.cli import main
from automation.server.app import create_app
from automation.store import fields
from tests.conftest import ROOT, outbox_files, write

SHIPPED = ROOT / "templates"

#: A contact's locale -> the shipped locale it gets; None: none fits, the journey's default is used.
CASES: dict[str, str | None] = {
    "zh-TW": "zh-TW", "zh-tw": "zh-TW", "zh_TW": "zh-TW", "zh-Hant": "zh-TW", "zh-Hant-TW": "zh-TW",
    "zh-HK": "zh-TW", "zh-MO": "zh-TW",
    # Simplified Chinese readers never get the Traditional templates.
    "zh": None, "zh-CN": None, "zh-Hans": None,
    "ru-RU": "ru", "RU": "ru", "pl-PL": "pl", "fa-IR": "fa", "fa-AF": "fa", "en-GB": "en", "en-US": "en",
    "pt-BR": None, "xx-!!": None, "": None,
}
#: Written out here rather than read from templates/defaults.yaml, so a wrong pick cannot agree with itself.
FOOTER_LINK = {"en": "Unsubscribe", "ru": "Отписаться", "pl": "Wypisz się", "fa": "لغو اشتراک", "zh-TW": "取消訂閱"}
FIRST_NAME = {"en": "there", "ru": "друг", "pl": "drogi kliencie", "fa": "دوست عزیز", "zh-TW": "朋友"}
SMS_START = {"en": "You are subscribed", "ru": "Вы подписаны", "pl": "Subskrybujesz", "fa": "عضویت شما",
             "zh-TW": "您已訂閱"}
QUESTION = {"en": "Stop receiving emails from us?", "ru": "Больше не получать от нас писем?",
            "pl": "Nie chcesz już otrzymywać od nas e-maili?", "fa": "آیا می‌خواهید دیگر ایمیل‌های ما را دریافت نکنید؟",
            "zh-TW": "不再接收我們的電子郵件？"}
DIRECTION = {"en": "ltr", "ru": "ltr", "pl": "ltr", "fa": "rtl", "zh-TW": "ltr"}
CONTEXT = {"brand": "Northwind", "shop_url": "https://shop.test", "unsubscribe_url": "https://u.test/x",
           "contact": {}, "last": {}}


def expected(tag: str, default: str) -> str:
    found = CASES[tag]
    return found if found is not None else default


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TemplateCatalog(SHIPPED))


def render(renderer: Renderer, channel: str, name: str, tag: str, default: str) -> Any:
    """As the engine's render step does it: defaults for the contact's locale, then the template."""
    defaults = renderer.catalog.defaults_for(tag, default)
    return renderer.render(channel, name, tag, default, {**CONTEXT, "first_name": defaults["first_name"]})


# -- templates and defaults, through the catalog and renderer of the shipped files ----------------------------


@pytest.mark.parametrize("default", ["en", "pl"])
@pytest.mark.parametrize("tag", list(CASES))
def test_a_shipped_email_is_picked_by_negotiation(renderer, tag, default):
    locale = expected(tag, default)
    rendered = render(renderer, "email", "welcome", tag, default)
    # Then the file of the negotiated locale is used, and the page says its language and direction
    assert rendered.template.path == SHIPPED / "email" / f"welcome.{locale}.html"
    assert rendered.locale == locale
    html = rendered.parts["html"]
    assert f'<html lang="{locale}" dir="{DIRECTION[locale]}">' in html
    # and the footer from defaults.yaml is in the same language
    assert f'style="color:#71717a">{FOOTER_LINK[locale]}</a>' in html


@pytest.mark.parametrize("default", ["en", "pl"])
@pytest.mark.parametrize("tag", list(CASES))
def test_a_shipped_sms_is_picked_by_negotiation(renderer, tag, default):
    locale = expected(tag, default)
    rendered = render(renderer, "sms", "sms-welcome", tag, default)
    assert rendered.template.path == SHIPPED / "sms" / f"sms-welcome.{locale}.txt"
    assert rendered.parts["body"].startswith(SMS_START[locale])


@pytest.mark.parametrize("default", ["en", "pl"])
@pytest.mark.parametrize("tag", list(CASES))
def test_defaults_are_negotiated_the_same_way(renderer, tag, default):
    locale = expected(tag, default)
    catalog = renderer.catalog
    assert catalog.defaults_for(tag, default)["first_name"] == FIRST_NAME[locale]
    assert catalog.defaults_for(tag, default)["footer_link"] == FOOTER_LINK[locale]
    assert catalog.locale_defining("unsubscribe_question", tag, default) == locale


def test_the_journey_default_is_negotiated_too(renderer):
    # A journey written for zh-Hant (or fa-IR) gets the zh-TW (fa) files for contacts nothing fits
    assert render(renderer, "email", "welcome", "pt-BR", "zh-Hant").locale == "zh-TW"
    assert render(renderer, "email", "welcome", "pt-BR", "fa-IR").locale == "fa"
    # A journey written in Traditional Chinese gives it to everyone nothing fits, Simplified readers too:
    # the journey's locale is its author's choice of default
    assert render(renderer, "email", "welcome", "zh-CN", "zh-TW").locale == "zh-TW"
    # and a journey in a language nobody wrote falls back to English, the last resort
    rendered = render(renderer, "email", "welcome", "pt-BR", "de")
    assert rendered.locale == "en" and "Hi there," in rendered.parts["html"]


def test_direction_follows_the_negotiated_locale_not_the_contact(project):
    # Given no Persian welcome
    (project / "templates" / "email" / "welcome.fa.html").unlink()
    renderer = Renderer(TemplateCatalog(project / "templates"))
    # Then a Persian reader gets the English file, left to right (with the English footer)
    rendered = render(renderer, "email", "welcome", "fa-IR", "en")
    assert rendered.locale == "en"
    assert '<html lang="en" dir="ltr">' in rendered.parts["html"]
    assert text_direction("fa-AF") == "rtl" and text_direction("zh-Hant-HK") == "ltr"


def test_negotiated_answers_follow_new_files(project):
    # Given the shipped templates: a Simplified Chinese reader gets English, never Traditional
    templates = project / "templates"
    renderer = Renderer(TemplateCatalog(templates))
    assert render(renderer, "email", "welcome", "zh-CN", "en").locale == "en"
    # When Simplified Chinese files are added (the catalog has cached its answers)
    shutil.copy(templates / "email" / "welcome.zh-TW.html", templates / "email" / "welcome.zh-Hans.html")
    write(templates / "defaults.yaml", (templates / "defaults.yaml").read_text(encoding="utf-8")
          + "zh-Hans:\n  first_name: 朋友们\n  footer_link: 退订\n")
    renderer.catalog.refresh()
    # Then Simplified readers get them, with their own defaults, and Traditional readers still get zh-TW
    for tag in ("zh", "zh-CN", "zh-Hans", "zh_cn"):
        rendered = render(renderer, "email", "welcome", tag, "en")
        assert rendered.locale == "zh-Hans", tag
        assert "朋友们，您好" in rendered.parts["html"] and ">退订</a>" in rendered.parts["html"]
    for tag in ("zh-HK", "zh-Hant", "zh-TW"):
        assert render(renderer, "email", "welcome", tag, "en").locale == "zh-TW", tag


def test_among_regions_the_same_region_wins_then_the_usual_form():
    assert negotiate("en-GB", frozenset({"en-AU", "en", "en-GB"})) == "en-GB"
    assert negotiate("en-GB", frozenset({"en-AU", "en"})) == "en"
    assert negotiate("pt", frozenset({"pt-PT", "pt-BR"})) == "pt-BR"   # CLDR: pt is usually pt-BR
    assert negotiate("zh-Hant-CN", frozenset({"zh-TW", "zh-CN"})) == "zh-TW"   # the script the tag names wins
    assert negotiate("sr-Latn", frozenset({"sr"})) is None   # sr is written in Cyrillic
    assert negotiate("iw", frozenset({"he"})) == "he"   # an old name of Hebrew


# -- the engine: contacts in Redis, the welcome email in the outbox -------------------------------------------


def test_the_engine_sends_each_contact_the_negotiated_email(runtime, engine, run_due, settings):
    lc = Lifecycle(runtime)
    ids = {tag: f"c{n}" for n, tag in enumerate(CASES)}
    for tag, contact in ids.items():
        lc.identify(contact, {"email": f"{contact}@example.com", "consent": {"email": True},
                              **({"locale": tag} if tag != "xx-!!" else {})})
    # A locale stored before input was checked (or by another writer) is read as it is
    runtime.redis.hset(runtime.keys.contact(ids["xx-!!"]), fields.attribute("locale"), json.dumps("xx-!!"))
    assert lc.contact(ids["xx-!!"]).attributes["locale"] == "xx-!!"
    run_due(engine)
    sent = {path.name.split("--")[0]: email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            for path in outbox_files(settings.outbox_dir, "email")}
    for tag, contact in ids.items():
        locale = expected(tag, "en")   # the customer lifecycle is written for en
        outcome = lc.history(contact)["customer-lifecycle:lead:1:welcome"]
        assert (outcome["state"], outcome["loc"]) == ("sent", locale), tag
        html = sent[contact].get_body(("html",)).get_content()
        assert f'<html lang="{locale}" dir="{DIRECTION[locale]}">' in html, tag
        assert f">{FOOTER_LINK[locale]}</a>" in html, tag
    # the default name in the contact's language (these contacts have none)
    assert "朋友，您好" in sent[ids["zh-HK"]].get_body(("html",)).get_content()
    assert "سلام دوست عزیز" in sent[ids["fa-AF"]].get_body(("html",)).get_content()


# -- the unsubscribe page --------------------------------------------------------------------------------------


def call(url: str, method: str, path: str, query: str) -> tuple[int, str]:
    answer = requests.request(method, f"{url}{path}?{query}", timeout=10)
    return answer.status_code, answer.text


@pytest.mark.parametrize("tag", list(CASES))
def test_the_unsubscribe_page_is_negotiated_the_same_way(runtime, settings, serve_app, tag):
    lc = Lifecycle(runtime)
    lc.identify("c1", {"email": "c1@example.com", "consent": {"email": True},
                       **({"locale": tag} if tag != "xx-!!" else {})})
    if tag == "xx-!!":
        runtime.redis.hset(runtime.keys.contact("c1"), fields.attribute("locale"), json.dumps(tag))
    locale = expected(tag, "en")   # the page has no journey: English is its default
    app = serve_app(create_app(runtime, env={})).url     # `lifecycle serve`'s application, on a real server
    query = f"token={make_token(settings.secret, 'c1', 'email')}"
    status, page = call(app, "GET", "/unsubscribe", query)
    assert status == 200
    assert page.startswith(f'<!doctype html><html lang="{locale}" dir="{DIRECTION[locale]}">')
    assert f"<p>{QUESTION[locale]}</p>" in page
    status, done = call(app, "POST", "/unsubscribe", query)
    assert status == 200 and done.startswith(f'<!doctype html><html lang="{locale}" ')
    assert lc.contact("c1").attributes["consent"]["email"] is False


# -- lifecycle validate -----------------------------------------------------------------------------------------


JOURNEY = """\
journey: localized
description: A journey in one locale, using shipped templates.
locale: {locale}
vars:
  brand: Northwind
  shop_url: https://shop.example.com
stages:
  - name: all
    steps:
      - send: email
        template: welcome
      - wait: 1d
      - send: sms
        template: sms-welcome
      - wait: 1d
      - send: email
        template: welcome
"""


@pytest.mark.parametrize("locale, warned", [
    ("de", True), ("zh-CN", True), ("pt-BR", True),
    ("zh-Hant", False), ("zh-HK", False), ("fa-AF", False), ("en-GB", False), ("pl", False),
])
def test_validate_warns_at_the_locale_line_when_templates_fall_back(capsys, project, locale, warned):
    path = write(project / "journeys" / "localized.yaml", JOURNEY.format(locale=locale))
    code = main(["validate", str(path), "--templates", str(project / "templates")])
    *lines, summary = capsys.readouterr().out.splitlines()
    assert code == 0, "\n".join(lines)   # a warning, not an error: English is there
    if not warned:
        assert lines == [] and summary == "1 journey(s) OK"
        return
    assert summary == "1 journey(s) OK, 1 warning(s)"
    example = project / "templates" / "email" / f"welcome.{locale}.<ext>"
    assert lines == [
        f"{path}:3:9: warning: no version in {locale!r} of email/welcome, sms/sms-welcome: they fall back to en",
        f"    hint: add {locale} versions (e.g. {example}), or set locale: to one they are written in: "
        "en, fa, pl, ru, zh-TW",
    ]
    assert main(["validate", "--strict", str(path), "--templates", str(project / "templates")]) == 1


def test_the_fallback_warning_names_only_the_templates_that_fall_back(capsys, project):
    # Given a German welcome email but no German SMS
    email_dir = project / "templates" / "email"
    shutil.copy(email_dir / "welcome.en.html", email_dir / "welcome.de.html")
    path = write(project / "journeys" / "localized.yaml", JOURNEY.format(locale="de-AT"))
    main(["validate", str(path), "--templates", str(project / "templates")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path}:3:9: warning: no version in 'de-AT' of sms/sms-welcome: it falls back to en"


def test_the_fallback_warning_of_a_triggered_journey_names_templates_in_order(capsys, project):
    path = write(project / "journeys" / "triggered.yaml", """\
journey: triggered
locale: de
vars: {brand: Northwind, shop_url: https://shop.example.com}
trigger: {event: signup}
steps:
  - send: email
    template: welcome
  - send: sms
    template: sms-welcome
""")
    main(["validate", str(path), "--templates", str(project / "templates")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == \
        f"{path}:2:9: warning: no version in 'de' of email/welcome, sms/sms-welcome: they fall back to en"
