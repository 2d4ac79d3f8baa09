"""Message templates: `templates/<channel>/<name>[.<locale>].<ext>`, Jinja2 in the sandbox.

A template defines its message parts as blocks (`subject`, `html`, `text` for
email; `title`, `body` for push); a template without blocks is the whole body
(SMS). Templates may `{% extends %}` a layout and `{% import %}` macros.

HTML is autoescaped; subjects, text bodies and SMS are not (an `&` in a subject
must stay an `&`). Each template is therefore compiled in two environments that
differ only in autoescaping, and rendered once per environment with every block
captured as it runs, so top-level imports and layouts behave as usual.

A value the template prints but the contact does not have is an error for that
step (recorded, never a message with a hole); `{% if %}` and `| default(...)`
work on missing values as expected.
"""

from __future__ import annotations

import html as html_lib
import logging
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from jinja2 import ChainableUndefined, FileSystemLoader, TemplateError, TemplateSyntaxError
from jinja2.exceptions import UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from .expressions import configure

#: Parts of the built-in message kinds: (required, optional).
MESSAGE_PARTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "email": (("subject", "html"), ("text", "preheader")),
    "sms": (("body",), ()),
    "push": (("title", "body"), ()),
}
HTML_PARTS = frozenset({"html"})
DEFAULTS_FILE = "defaults.yaml"
logger = logging.getLogger(__name__)
RTL_LANGUAGES = frozenset({"ar", "fa", "he", "ur", "ps", "yi", "ckb"})


#: For a channel, the message parts its templates must and may define.
PartsFor = Callable[[str], tuple[tuple[str, ...], tuple[str, ...]]]


class MissingValue(ChainableUndefined):
    """Falsy and chainable (so `{% if last.purchase.item %}` works), but printing it fails."""

    __slots__ = ()

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        self._fail_with_undefined_error()

    __str__ = __html__ = _fail  # type: ignore[assignment]


class TemplateRenderError(Exception):
    """A template that could not produce a complete message."""


@dataclass(frozen=True)
class TemplateFile:
    channel: str
    name: str
    locale: str | None
    path: Path

    @property
    def loader_name(self) -> str:
        return f"{self.channel}/{self.path.name}"


@dataclass(frozen=True)
class Rendered:
    template: TemplateFile
    locale: str
    parts: Mapping[str, str]


_FILE = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*)"            # welcome
    r"(?:\.(?P<locale>[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*))?"  # .pt-BR (optional)
    r"\.[A-Za-z0-9]+$"                                  # .html
)


def locale_chain(locale: str | None, default: str | None) -> list[str | None]:
    """Lookup order: the contact's locale, its language, the journey default, its language, none."""
    chain: list[str | None] = []
    for candidate in (locale, default):
        if candidate:
            for option in (candidate, candidate.split("-")[0]):
                if option not in chain:
                    chain.append(option)
    chain.append(None)
    return chain


def text_direction(locale: str | None) -> str:
    return "rtl" if locale and locale.split("-")[0].lower() in RTL_LANGUAGES else "ltr"


class TemplateCatalog:
    """Index of the template files on disk; rescanned on `refresh()`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._index: dict[tuple[str, str], dict[str | None, TemplateFile]] = {}
        self._defaults: dict[str, dict[str, Any]] = {}
        self.refresh()

    def refresh(self) -> None:
        index: dict[tuple[str, str], dict[str | None, TemplateFile]] = {}
        if self.root.is_dir():
            for channel_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
                for path in sorted(channel_dir.iterdir()):
                    match = _FILE.match(path.name)
                    if not path.is_file() or path.name.startswith("_") or not match:
                        continue
                    entry = TemplateFile(channel_dir.name, match["name"], match["locale"], path)
                    index.setdefault((channel_dir.name, match["name"]), {})[match["locale"]] = entry
        self._index = index
        self._defaults = self._read_defaults()

    def _read_defaults(self) -> dict[str, dict[str, Any]]:
        """`defaults.yaml`: values used when a contact lacks them, per locale."""
        path = self.root / DEFAULTS_FILE
        if not path.is_file():
            return {}
        from ruamel.yaml import YAML

        try:
            data = YAML(typ="safe").load(path.read_text(encoding="utf-8")) or {}
        except Exception as exc:  # reported by `lifecycle validate`; rendering falls back to built-ins
            logger.error("%s: %s", path, exc)
            return {}
        return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}

    def defaults_for(self, locale: str | None, default_locale: str | None) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for option in reversed(locale_chain(locale, default_locale)):
            if option is not None:
                merged.update(self._defaults.get(option, {}))
        return merged

    def files(self) -> Iterable[TemplateFile]:
        for by_locale in self._index.values():
            yield from by_locale.values()

    def names(self, channel: str) -> list[str]:
        return sorted(name for ch, name in self._index if ch == channel)

    def variants(self, channel: str, name: str) -> Mapping[str | None, TemplateFile]:
        return self._index.get((channel, name), {})

    def resolve(self, channel: str, name: str, locale: str | None, default: str | None) -> TemplateFile | None:
        variants = self.variants(channel, name)
        for option in locale_chain(locale, default):
            if option in variants:
                return variants[option]
        return None


def _environment(root: Path, autoescape: bool) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(root)),
        autoescape=autoescape,
        undefined=MissingValue,
        auto_reload=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return configure(env)


class Renderer:
    """Renders the parts of a message from a template file and a context."""

    def __init__(self, catalog: TemplateCatalog, parts_for: PartsFor | None = None) -> None:
        self.catalog = catalog
        self.parts_for = parts_for or (lambda channel: MESSAGE_PARTS.get(channel, (("body",), ())))
        self._text_env = _environment(catalog.root, autoescape=False)
        self._html_env = _environment(catalog.root, autoescape=True)

    def render(self, channel: str, name: str, locale: str | None, default_locale: str | None,
               context: Mapping[str, Any]) -> Rendered:
        template = self.catalog.resolve(channel, name, locale, default_locale)
        if template is None:
            tried = ", ".join(f"{name}.{opt}" if opt else name for opt in locale_chain(locale, default_locale))
            raise TemplateRenderError(f"no template {channel}/{name} (looked for {tried})")
        used_locale = template.locale or default_locale or locale or "en"
        variables = dict(context)
        variables.setdefault("locale", used_locale)
        variables.setdefault("dir", text_direction(used_locale))
        required, optional = self.parts_for(channel)
        wanted = required + optional
        parts: dict[str, str] = {}
        try:
            text_parts = [p for p in wanted if p not in HTML_PARTS]
            html_parts = [p for p in wanted if p in HTML_PARTS]
            if text_parts:
                parts.update(self._render_parts(self._text_env, template, variables, text_parts))
            if html_parts:
                parts.update(self._render_parts(self._html_env, template, variables, html_parts))
        except UndefinedError as exc:
            raise TemplateRenderError(f"{template.path}: missing value: {exc.message}") from None
        except TemplateError as exc:
            lineno = getattr(exc, "lineno", None)
            where = f"{template.path}:{lineno}" if lineno else str(template.path)
            raise TemplateRenderError(f"{where}: {exc}") from None
        except Exception as exc:  # sandbox violations and errors in marketer code
            raise TemplateRenderError(f"{template.path}: {type(exc).__name__}: {exc}") from None
        if "text" in wanted and not parts.get("text") and parts.get("html"):
            parts["text"] = html_to_text(parts["html"])
        for part in ("subject", "title"):
            if part in parts:
                parts[part] = " ".join(parts[part].split())
        for part in required:
            if not parts.get(part, "").strip():
                raise TemplateRenderError(f"{template.path}: the {part!r} part is empty")
        return Rendered(template, used_locale, {k: v.strip() for k, v in parts.items()})

    def _render_parts(self, env: SandboxedEnvironment, template: TemplateFile, variables: Mapping[str, Any],
                      parts: list[str]) -> dict[str, str]:
        compiled = env.get_template(template.loader_name)
        context = compiled.new_context(dict(variables))
        captured: dict[str, str] = {}

        def capture(name: str, block: Callable[[Any], Iterable[str]]) -> Callable[[Any], Iterable[str]]:
            def run(ctx: Any) -> Iterable[str]:
                out = "".join(block(ctx))
                captured.setdefault(name, out)
                yield out
            return run

        for name, chain in context.blocks.items():
            chain[0] = capture(name, chain[0])
        whole = "".join(compiled.root_render_func(context))
        result: dict[str, str] = {}
        for part in parts:
            if part in captured:
                result[part] = captured[part]
            elif part in context.blocks:  # defined but not printed by a layout
                result[part] = "".join(context.blocks[part][0](context))
        if not compiled.blocks and parts == ["body"]:
            result["body"] = whole
        return result

    def check(self, template: TemplateFile) -> list[tuple[int, str]]:
        """Problems in a template file as (line, message): syntax errors and missing parts."""
        problems: list[tuple[int, str]] = []
        try:
            compiled = self._text_env.get_template(template.loader_name)
            self._html_env.get_template(template.loader_name)
        except TemplateSyntaxError as exc:
            return [(exc.lineno or 1, f"template syntax error: {exc.message}")]
        except TemplateError as exc:
            return [(1, f"template error: {exc}")]
        required, _ = self.parts_for(template.channel)
        blocks = set(self._all_blocks(compiled))
        missing = [p for p in required if p not in blocks]
        if missing and not (required == ("body",) and not blocks):
            problems.append((1, f"{template.channel} template has no {' or '.join(repr(m) for m in missing)} block"))
        return problems

    def _all_blocks(self, compiled: Any) -> Iterable[str]:
        yield from compiled.blocks
        source = compiled.environment.loader.get_source(compiled.environment, compiled.name)[0]
        match = re.search(r"{%-?\s*extends\s+['\"]([^'\"]+)['\"]", source)
        if match:
            try:
                yield from self._all_blocks(compiled.environment.get_template(match.group(1)))
            except TemplateError:
                pass


class _TextExtractor(HTMLParser):
    _BLOCKS = {"p", "div", "br", "tr", "h1", "h2", "h3", "h4", "li", "table", "section"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._href: str | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip += 1
        elif tag == "a":
            self._href = dict(attrs).get("href")
        elif tag in self._BLOCKS:
            self.out.append("\n")
        if tag == "li":
            self.out.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag == "a" and self._href:
            self.out.append(f" ({self._href})")
            self._href = None
        elif tag in self._BLOCKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data)


def html_to_text(markup: str) -> str:
    """A readable plain-text alternative for email clients that do not show HTML."""
    parser = _TextExtractor()
    parser.feed(markup)
    text = html_lib.unescape("".join(parser.out))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
