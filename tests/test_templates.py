"""Templates: parts, escaping, defaults, locales, and errors that never become broken messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from automation.messages.templates import (
    Renderer,
    TemplateCatalog,
    TemplateRenderError,
    html_to_text,
    locale_chain,
    text_direction,
)
from tests.conftest import write

EMAIL = """\
{% extends "email/_layout.html" %}
{% block subject %}Hi {{ first_name }} & welcome to {{ brand }}{% endblock %}
{% block content %}<p>Hello {{ first_name }}, you bought {{ last.purchase.item | default("something") }}.</p>
{% endblock %}
"""


@pytest.fixture
def renderer(tmp_path: Path) -> Renderer:
    write(tmp_path / "email" / "_layout.html",
          '{% block html %}<html lang="{{ locale }}" dir="{{ dir }}">{% block content %}{% endblock %}'
          '<a href="{{ unsubscribe_url }}">unsubscribe</a></html>{% endblock %}')
    write(tmp_path / "email" / "hello.en.html", EMAIL)
    write(tmp_path / "email" / "hello.fa.html", EMAIL.replace("Hi", "سلام"))
    write(tmp_path / "sms" / "ping.en.txt", "{{ brand }}: hi {{ first_name }}")
    write(tmp_path / "sms" / "typo.en.txt", "hi {{ contact.frist_name }}")
    write(tmp_path / "push" / "offer.txt", "{% block title %}Offer{% endblock %}{% block body %}20% off{% endblock %}")
    return Renderer(TemplateCatalog(tmp_path))


def context(**extra):
    base = {"first_name": "Ana <b>", "brand": "Tom & Jerry", "contact": {"first_name": "Ana"},
            "last": {"purchase": {"item": "shirt <3"}}, "unsubscribe_url": "https://x.test/u?t=1&c=2"}
    return {**base, **extra}


def test_html_is_escaped_but_subject_and_text_are_not(renderer):
    rendered = renderer.render("email", "hello", "en", "en", context())
    assert rendered.parts["subject"] == "Hi Ana <b> & welcome to Tom & Jerry"
    assert "<p>Hello Ana &lt;b&gt;, you bought shirt &lt;3.</p>" in rendered.parts["html"]
    assert 'href="https://x.test/u?t=1&amp;c=2"' in rendered.parts["html"]
    # A text part is derived from the HTML when the template has none.
    assert "Hello Ana <b>, you bought shirt <3." in rendered.parts["text"]
    assert "unsubscribe (https://x.test/u?t=1&c=2)" in rendered.parts["text"]


def test_layout_gets_locale_and_direction(renderer):
    persian = renderer.render("email", "hello", "fa-IR", "en", context())
    assert persian.locale == "fa"
    assert '<html lang="fa" dir="rtl">' in persian.parts["html"]
    assert persian.parts["subject"].startswith("سلام")
    english = renderer.render("email", "hello", None, "en", context())
    assert '<html lang="en" dir="ltr">' in english.parts["html"]


def test_locale_fallback_order():
    # the contact's locale, the journey's, a file without a locale, English (each locale negotiated)
    assert locale_chain("pt-BR", "en") == ["pt-BR", "en", None]
    assert locale_chain("pt-BR", "de") == ["pt-BR", "de", None, "en"]
    assert locale_chain(None, "en") == ["en", None]
    assert text_direction("fa") == "rtl" and text_direction("ar-EG") == "rtl" and text_direction("pl") == "ltr"


def test_missing_values_can_be_tested_and_defaulted(renderer):
    rendered = renderer.render("email", "hello", "en", "en", context(last={}))
    assert "you bought something." in rendered.parts["html"]


def test_a_typo_is_an_error_not_a_message_with_a_hole(renderer):
    with pytest.raises(TemplateRenderError) as error:
        renderer.render("sms", "typo", "en", "en", context())
    assert "typo.en.txt" in str(error.value)
    assert "frist_name" in str(error.value)


def test_sms_without_blocks_is_the_whole_body(renderer):
    assert renderer.render("sms", "ping", "en", "en", context()).parts == {"body": "Tom & Jerry: hi Ana <b>"}


def test_push_has_title_and_body_and_a_locale_free_default(renderer):
    rendered = renderer.render("push", "offer", "ru", "en", context())
    assert rendered.parts == {"title": "Offer", "body": "20% off"}


def test_no_template_for_any_locale(renderer):
    with pytest.raises(TemplateRenderError, match="no template sms/missing"):
        renderer.render("sms", "missing", "en", "en", context())


def test_the_sandbox_blocks_python_internals(renderer, tmp_path):
    write(tmp_path / "sms" / "evil.en.txt", "{{ ''.__class__.__mro__[1].__subclasses__() }}")
    renderer.catalog.refresh()
    with pytest.raises(TemplateRenderError, match="evil.en.txt") as error:
        renderer.render("sms", "evil", "en", "en", context())
    assert "no template" not in str(error.value)


def test_empty_required_part_is_an_error(renderer, tmp_path):
    write(tmp_path / "push" / "blank.en.txt", "{% block title %}{% endblock %}{% block body %}x{% endblock %}")
    renderer.catalog.refresh()
    with pytest.raises(TemplateRenderError, match="'title' part is empty"):
        renderer.render("push", "blank", "en", "en", context())


def test_html_to_text_keeps_links_and_paragraphs():
    text = html_to_text("<html><head><style>p{}</style></head><p>One &amp; two</p><p><a href='u'>Link</a></p></html>")
    assert text == "One & two\n\nLink (u)"


def test_edits_are_picked_up_after_a_refresh(renderer, tmp_path):
    assert renderer.render("sms", "ping", "en", "en", context()).parts["body"].startswith("Tom & Jerry: hi")
    write(tmp_path / "sms" / "ping.en.txt", "Changed: {{ first_name }}")
    renderer.catalog.refresh()
    assert renderer.render("sms", "ping", "en", "en", context()).parts["body"] == "Changed: Ana <b>"


def test_top_level_imports_and_super_still_work(renderer, tmp_path):
    write(tmp_path / "email" / "_macros.html", "{% macro shout(x) %}{{ x | upper }}!{% endmacro %}")
    write(tmp_path / "email" / "_base.html",
          "{% block subject %}Base{% endblock %}{% block html %}<p>b</p>{% endblock %}")
    write(tmp_path / "email" / "macro.en.html", '{% import "email/_macros.html" as m %}'
          "{% block subject %}{{ m.shout(first_name) }}{% endblock %}{% block html %}{{ m.shout('x') }}{% endblock %}")
    write(tmp_path / "email" / "sup.en.html", '{% extends "email/_base.html" %}'
          "{% block subject %}{{ super() }} and more{% endblock %}")
    renderer.catalog.refresh()
    assert renderer.render("email", "macro", "en", "en", context()).parts["subject"] == "ANA <B>!"
    assert renderer.render("email", "sup", "en", "en", context()).parts["subject"] == "Base and more"


SHIPPED = Path(__file__).resolve().parent.parent / "templates"


@pytest.mark.parametrize("locale, note, link", [
    ("fa", "این پیام را دریافت می‌کنید چون در Tom & Jerry حساب کاربری دارید.", "لغو اشتراک"),
    ("zh-TW", "您收到這封郵件，是因為您在 Tom & Jerry 擁有帳戶。", "取消訂閱"),
    ("ru-RU", "Вы получили это письмо, потому что у вас есть аккаунт в Tom & Jerry.", "Отписаться"),
    ("de", "You receive this because you have an account at Tom & Jerry.", "Unsubscribe"),  # no German: English
])
def test_the_shipped_layout_footer_is_in_the_language_of_the_message(locale, note, link):
    rendered = Renderer(TemplateCatalog(SHIPPED)).render(
        "email", "welcome", locale, "en", context(shop_url="https://shop.test", unsubscribe_url="https://u.test/x"))
    html = rendered.parts["html"]
    assert note.replace("&", "&amp;") in html
    assert f'<a href="https://u.test/x" style="color:#71717a">{link}</a>' in html


def test_defaults_yaml_values_reach_templates_and_follow_edits(renderer, tmp_path):
    write(tmp_path / "defaults.yaml", "en: {sign_off: Cheers}\nfa: {sign_off: با احترام}\n")
    write(tmp_path / "sms" / "bye.en.txt", "{{ sign_off }}, {{ brand }}")
    write(tmp_path / "sms" / "bye.fa.txt", "{{ sign_off }}، {{ brand }}")
    renderer.catalog.refresh()
    assert renderer.render("sms", "bye", "fa", "en", context()).parts["body"] == "با احترام، Tom & Jerry"
    assert renderer.render("sms", "bye", "pl", "en", context()).parts["body"] == "Cheers, Tom & Jerry"
    # a journey's vars win over the file
    assert renderer.render("sms", "bye", "en", "en", context(sign_off="Bye")).parts["body"] == "Bye, Tom & Jerry"
    write(tmp_path / "defaults.yaml", "en: {sign_off: Thanks}\n")
    renderer.catalog.refresh()
    assert renderer.render("sms", "bye", "en", "en", context()).parts["body"] == "Thanks, Tom & Jerry"
