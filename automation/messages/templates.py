"""Message templates: `templates/<channel>/<name>[.<locale>].<ext>`, Jinja2 in the sandbox.

A template defines its message parts as blocks (`subject`, `html`, `text` for
email; `title`, `body` for push); a template without blocks is the whole body
(SMS). Templates may `{% extends %}` a layout and `{% import %}` macros.

HTML is autoescaped; subjects, text bodies and SMS are not (an `&` in a subject
must stay an `&`). Every part is rendered in the one autoescaping environment,
from one context, and the parts that are not HTML have their HTML entities
decoded: decoding undoes exactly what escaping did to the contact's values, and
entities have no meaning outside HTML anyway. Templates with only `extends` and
blocks at the top level render each part straight from its block, the way
Jinja's own inheritance would; others (top-level imports, `super()`) run once
with every block captured as it renders.

A value the template prints but the contact does not have is an error for that
step (recorded, never a message with a hole); `{% if %}` and `| default(...)`
work on missing values as expected.
"""

from __future__ import annotations

import html as html_lib
import logging
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from jinja2 import ChainableUndefined, FileSystemLoader, TemplateError, TemplateSyntaxError, nodes
from jinja2.exceptions import UndefinedError
from ruamel.yaml import YAML

from automation.errors import TemplateLimitError, TemplateRenderError
from automation.expressions import configure
from automation.messages.locales import locale_chain, negotiate, text_direction
from automation.sandbox import BoundedSandbox, Meter, OverBudget, OverLimit, RenderBudget, unsafe_access

#: Parts of the built-in message kinds: (required, optional).
MESSAGE_PARTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "email": (("subject", "html"), ("text", "preheader")),
    "sms": (("body",), ()),
    "push": (("title", "body"), ()),
}
HTML_PARTS = frozenset({"html"})
DEFAULTS_FILE = "defaults.yaml"
logger = logging.getLogger(__name__)
#: Negotiated answers kept per catalog (contact locales are few, but a bad source could send many).
MAX_CACHED = 10_000


#: For a channel, the message parts its templates must and may define.
PartsFor = Callable[[str], tuple[tuple[str, ...], tuple[str, ...]]]


class MissingValue(ChainableUndefined):
    """Falsy and chainable (so `{% if last.purchase.item %}` works), but printing it fails."""

    __slots__ = ()

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        self._fail_with_undefined_error()

    __str__ = __html__ = _fail  # type: ignore[assignment]


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
class TemplateProblem:
    """What `lifecycle validate` reports about a template file, at a 1-based line and column."""

    path: Path
    line: int
    column: int
    message: str
    hint: str | None = None


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


@dataclass
class _Scan:
    """One scan of the templates folder and the answers negotiated from it. A change replaces it
    whole, so a thread still working with the old scan never files an answer under the new one."""

    index: dict[tuple[str, str], dict[str | None, TemplateFile]] = field(default_factory=dict)
    locales: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    resolved: dict[tuple[str, str, str | None, str | None], TemplateFile | None] = field(default_factory=dict)
    merged: dict[tuple[str | None, str | None], dict[str, Any]] = field(default_factory=dict)
    defining: dict[tuple[str, str | None, str | None], str | None] = field(default_factory=dict)


def _keep(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= MAX_CACHED:
        cache.clear()
    cache[key] = value


class TemplateCatalog:
    """Index of the template files on disk; rescanned on `refresh()`.

    Which file and which defaults a contact gets is negotiated by `automation.messages.locales`
    (zh-HK gets zh-TW, ru-RU gets ru); the answers are kept until the files change, because
    every message asks.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._scan = _Scan()
        self._signature: int | None = None
        self.version = 0
        self.refresh()

    def refresh(self) -> None:
        """Rescan the files; `version` changes when any file (layouts and partials too) changed."""
        index: dict[tuple[str, str], dict[str | None, TemplateFile]] = {}
        stamps: list[tuple[str, int, int]] = []
        if self.root.is_dir():
            for channel_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
                for path in sorted(channel_dir.iterdir()):
                    if not path.is_file():
                        continue
                    info = path.stat()
                    stamps.append((str(path), info.st_mtime_ns, info.st_size))
                    match = _FILE.match(path.name)
                    if path.name.startswith("_") or not match:
                        continue
                    entry = TemplateFile(channel_dir.name, match["name"], match["locale"], path)
                    index.setdefault((channel_dir.name, match["name"]), {})[match["locale"]] = entry
        defaults = self.root / DEFAULTS_FILE
        if defaults.is_file():
            info = defaults.stat()
            stamps.append((str(defaults), info.st_mtime_ns, info.st_size))
        signature = hash(tuple(stamps))
        if signature == self._signature:
            return
        locales = {key: frozenset(loc for loc in by_locale if loc) for key, by_locale in index.items()}
        self._scan = _Scan(index, locales, self._read_defaults())
        self._signature = signature
        self.version += 1

    def _read_defaults(self) -> dict[str, dict[str, Any]]:
        """`defaults.yaml`: values used when a contact lacks them, per locale."""
        path = self.root / DEFAULTS_FILE
        if not path.is_file():
            return {}

        try:
            data = YAML(typ="safe").load(path.read_text(encoding="utf-8")) or {}
        except Exception as exc:  # reported by `lifecycle validate`; rendering falls back to built-ins
            logger.error("%s: %s", path, exc)
            return {}
        return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}

    @staticmethod
    def _defaults_chain(locale: str | None, default_locale: str | None, available: frozenset[str]) -> list[str]:
        """The locales of defaults.yaml to read, most specific first, English last."""
        chosen = (negotiate(option, available) for option in locale_chain(locale, default_locale)
                  if option is not None)
        return list(dict.fromkeys(found for found in chosen if found is not None))

    def defaults_for(self, locale: str | None, default_locale: str | None) -> dict[str, Any]:
        """The values of defaults.yaml for a reader of `locale` (then the journey's locale, then English)."""
        scan, key = self._scan, (_tag(locale), _tag(default_locale))
        merged = scan.merged.get(key)
        if merged is None:
            merged = {}
            for option in reversed(self._defaults_chain(*key, frozenset(scan.defaults))):
                merged.update(scan.defaults[option])
            _keep(scan.merged, key, merged)
        return dict(merged)

    def locale_defining(self, key: str, locale: str | None, default_locale: str | None) -> str | None:
        """The first locale in the lookup order whose defaults define `key`: the language a text
        from `defaults_for` is in (a page's `lang`), or None when no locale defines it."""
        scan, wanted = self._scan, (key, _tag(locale), _tag(default_locale))
        try:
            return scan.defining[wanted]
        except KeyError:
            pass
        defining = frozenset(loc for loc, values in scan.defaults.items() if key in values)
        chain = self._defaults_chain(wanted[1], wanted[2], defining)
        found = chain[0] if chain else None
        _keep(scan.defining, wanted, found)
        return found

    def files(self) -> Iterable[TemplateFile]:
        for by_locale in self._scan.index.values():
            yield from by_locale.values()

    def names(self, channel: str) -> list[str]:
        return sorted(name for ch, name in self._scan.index if ch == channel)

    def variants(self, channel: str, name: str) -> Mapping[str | None, TemplateFile]:
        return self._scan.index.get((channel, name), {})

    def locales(self, channel: str, name: str) -> frozenset[str]:
        """The locales a template is written in (files without a locale aside)."""
        return self._scan.locales.get((channel, name), frozenset())

    def resolve(self, channel: str, name: str, locale: str | None, default: str | None) -> TemplateFile | None:
        """The file for a reader of `locale`: see `locale_chain` for the order, `negotiate` for matching."""
        scan = self._scan
        key = (channel, name, _tag(locale), _tag(default))
        try:
            return scan.resolved[key]
        except KeyError:
            pass
        variants = scan.index.get((channel, name), {})
        available = scan.locales.get((channel, name), frozenset())
        found = None
        for option in locale_chain(key[2], key[3]):
            if option is None:
                found = variants.get(None)
            else:
                match = negotiate(option, available)
                found = variants[match] if match is not None else None
            if found is not None:
                break
        _keep(scan.resolved, key, found)
        return found

    def fallback_of(self, channel: str, name: str, locale: str) -> TemplateFile | None:
        """The file readers of `locale` get when the template has versions in other languages but
        not in theirs, and that file is not one written for every language (no locale): else None."""
        available = self.locales(channel, name)
        if not available or negotiate(locale, available) is not None:
            return None
        found = self.resolve(channel, name, None, locale)
        return found if found is not None and found.locale is not None else None


def _tag(value: Any) -> str | None:
    """A locale as stored (an attribute may hold anything): only text can be a tag."""
    return value if isinstance(value, str) else None


def _plain(rendered: str) -> str:
    """A part that is not HTML: undo the autoescaping (`Tom &amp; Jerry` -> `Tom & Jerry`)."""
    return html_lib.unescape(rendered) if "&" in rendered else rendered


def _environment(root: Path) -> BoundedSandbox:
    # No auto_reload (a stat per template per message): the catalog's periodic refresh
    # notices changed files and the renderer drops its compiled templates then.
    env = BoundedSandbox(
        loader=FileSystemLoader(str(root)),
        autoescape=True,
        undefined=MissingValue,
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return configure(env)


class Renderer:
    """Renders the parts of a message from a template file and a context."""

    def __init__(self, catalog: TemplateCatalog, parts_for: PartsFor | None = None,
                 budget: RenderBudget | None = None) -> None:
        self.catalog = catalog
        self.parts_for = parts_for or (lambda channel: MESSAGE_PARTS.get(channel, (("body",), ())))
        self.budget = budget or RenderBudget()
        self.env = _environment(catalog.root)
        self._seen_version = catalog.version
        self._chains: dict[str, list[Any] | None] = {}
        self._compiled: set[str] = set()
        self._strings: dict[str, dict[str, Any]] = {}

    def _sync(self) -> None:
        """Forget compiled templates when files changed on disk."""
        if self._seen_version != self.catalog.version:
            self._seen_version = self.catalog.version
            if self.env.cache is not None:
                self.env.cache.clear()
            self._chains.clear()
            self._compiled.clear()
            self._strings.clear()

    def render(self, channel: str, name: str, locale: str | None, default_locale: str | None,
               context: Mapping[str, Any]) -> Rendered:
        self._sync()
        template = self.catalog.resolve(channel, name, locale, default_locale)
        if template is None:
            tried = ", ".join(f"{name}.{opt}" if opt else name for opt in locale_chain(locale, default_locale))
            raise TemplateRenderError(f"no template {channel}/{name} (looked for {tried})")
        used_locale = template.locale or default_locale or locale or "en"
        variables = dict(context)
        variables.setdefault("locale", used_locale)
        variables.setdefault("dir", text_direction(used_locale))
        # Per-locale values of defaults.yaml (a layout's footer, say) in the language the message is in.
        strings = self._strings.get(used_locale)
        if strings is None:
            strings = self._strings[used_locale] = self.catalog.defaults_for(used_locale, "en")
        for key, value in strings.items():
            variables.setdefault(key, value)
        required, optional = self.parts_for(channel)
        wanted = tuple(required) + tuple(optional)
        try:
            parts = self._render_parts(template, variables, wanted)
        except OverBudget as exc:   # stopped at the deadline or size: the worker thread is free again
            raise TemplateLimitError(f"{template.path}: template '{channel}/{name}' exceeded its {exc.what}") \
                from None
        except OverLimit as exc:
            raise TemplateLimitError(f"{template.path}: template '{channel}/{name}': {exc}") from None
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

    def _render_parts(self, template: TemplateFile, variables: Mapping[str, Any],
                      parts: tuple[str, ...]) -> dict[str, str]:
        compiled = self.env.get_template(template.loader_name)
        chain = self._chain(template.loader_name)
        if template.loader_name not in self._compiled:
            # Layouts, imports and includes compile before the clock starts: compiling is not rendering.
            for name, _ in self._sources(template.loader_name, set()):
                self.env.get_template(name)
            self._compiled.add(template.loader_name)
        with Meter(self.budget) as meter:
            return self._render_metered(compiled, chain, dict(variables), parts, meter)

    def _render_metered(self, compiled: Any, chain: list[Any] | None, variables: dict[str, Any],
                        parts: tuple[str, ...], meter: Meter) -> dict[str, str]:
        context = compiled.new_context(variables)
        if not compiled.blocks and parts == ("body",):
            return {"body": _plain(meter.join(compiled.root_render_func(context)))}
        if chain is not None:
            # Only blocks and `extends` at the top level: wire the inherited blocks into the context
            # the way Jinja's `extends` does and render each wanted part once, from its block.
            for parent in chain[1:]:
                for name, block in parent.blocks.items():
                    context.blocks.setdefault(name, []).append(block)
            render = lambda part: meter.join(context.blocks[part][0](context))  # noqa: E731
        else:
            # Top-level code (imports, sets, super()): run the template once, keeping each block's output.
            captured: dict[str, str] = {}
            for name, blocks in context.blocks.items():
                blocks[0] = _Capture(name, blocks[0], captured)
            meter.join(compiled.root_render_func(context))

            def render(part: str) -> str:
                return captured[part] if part in captured else meter.join(context.blocks[part][0](context))
        result: dict[str, str] = {}
        for part in parts:  # text parts first: the layout shows the subject and preheader
            if part not in HTML_PARTS and part in context.blocks:
                result[part] = _plain(render(part))
                if part in ("subject", "preheader"):
                    context.vars[part] = " ".join(result[part].split())
        for part in parts:
            if part in HTML_PARTS and part in context.blocks:
                result[part] = render(part)
        return result

    def _chain(self, name: str) -> list[Any] | None:
        """[template, its layout, ...] if each has only `extends` and blocks at its top level, else None.

        A top-level `{% import %}` or `{% set %}` must run for blocks to see it, and `super()`
        needs Jinja's own bookkeeping: such templates take the slower, general path.
        """
        if name not in self._chains:
            self._chains[name] = self._find_chain(name, depth=0)
        return self._chains[name]

    def _find_chain(self, name: str, depth: int) -> list[Any] | None:
        env = self.env
        if depth > 10:
            return None
        ast = env.parse(env.loader.get_source(env, name)[0])
        if any(node.name == "super" for node in ast.find_all(nodes.Name)):
            return None
        parent = None
        for node in ast.body:
            if isinstance(node, nodes.Extends):
                if not isinstance(node.template, nodes.Const) or parent is not None:
                    return None
                parent = node.template.value
            elif isinstance(node, nodes.Output):
                if not all(isinstance(n, nodes.TemplateData) and not n.data.strip() for n in node.nodes):
                    return None
            elif not isinstance(node, nodes.Block):
                return None
        chain = [env.get_template(name)]
        if parent is not None:
            rest = self._find_chain(parent, depth + 1)
            if rest is None:
                return None
            chain += rest
        return chain

    def check(self, template: TemplateFile) -> list[TemplateProblem]:
        """Problems in a template file: syntax errors, missing parts, and attributes the sandbox
        refuses (in the file or the layouts and macros it uses)."""
        self._sync()
        path = template.path
        try:
            compiled = self.env.get_template(template.loader_name)
        except TemplateSyntaxError as exc:
            return [TemplateProblem(path, exc.lineno or 1, 1, f"template syntax error: {exc.message}")]
        except TemplateError as exc:
            return [TemplateProblem(path, 1, 1, f"template error: {exc}")]
        problems = [TemplateProblem(self.catalog.root / name, u.line, u.column, u.message, u.hint)
                    for name, source in self._sources(template.loader_name, set())
                    for u in unsafe_access(self.env, source)]
        required, _ = self.parts_for(template.channel)
        blocks = set(self._all_blocks(compiled))
        missing = [p for p in required if p not in blocks]
        if missing and not (required == ("body",) and not blocks):
            problems.append(TemplateProblem(
                path, 1, 1, f"{template.channel} template has no {' or '.join(repr(m) for m in missing)} block"))
        return problems

    def _sources(self, name: str, seen: set[str]) -> Iterable[tuple[str, str]]:
        """(name, source) of a template and of the layouts, imports and includes it names."""
        if name in seen:
            return
        seen.add(name)
        try:
            source = self.env.loader.get_source(self.env, name)[0]  # type: ignore[union-attr]
            tree = self.env.parse(source)
        except TemplateError:
            return   # a missing or broken layout is reported when the template compiles
        yield name, source
        for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
            if isinstance(node.template, nodes.Const) and isinstance(node.template.value, str):
                yield from self._sources(node.template.value, seen)

    def _all_blocks(self, compiled: Any) -> Iterable[str]:
        yield from compiled.blocks
        source = compiled.environment.loader.get_source(compiled.environment, compiled.name)[0]
        match = re.search(r"{%-?\s*extends\s+['\"]([^'\"]+)['\"]", source)
        if match:
            try:
                yield from self._all_blocks(compiled.environment.get_template(match.group(1)))
            except TemplateError:
                pass


class _Capture:
    """Stands in for a block function and keeps what it rendered.

    It compares equal to the block it wraps because Jinja finds a block's parent for
    `{{ super() }}` by looking the running block up in the chain.
    """

    __slots__ = ("name", "block", "captured")

    def __init__(self, name: str, block: Callable[[Any], Iterable[str]], captured: dict[str, str]) -> None:
        self.name, self.block, self.captured = name, block, captured

    def __call__(self, context: Any) -> Iterable[str]:
        out = []
        for chunk in self.block(context):   # passed on as it comes, so the render's meter counts it
            out.append(chunk)
            yield chunk
        self.captured.setdefault(self.name, "".join(out))

    def __eq__(self, other: object) -> bool:
        return other is self or other is self.block

    def __hash__(self) -> int:
        return hash(self.block)


class _TextExtractor(HTMLParser):
    _BLOCKS = {"p", "div", "br", "tr", "h1", "h2", "h3", "h4", "li", "table", "section"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._href: str | None = None
        self._skip = 0
        self._hidden: tuple[str, int] | None = None   # an element with display:none (a preheader): tag, depth

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._hidden is not None:
            if tag == self._hidden[0]:
                self._hidden = (tag, self._hidden[1] + 1)
            return
        style = (dict(attrs).get("style") or "").replace(" ", "").lower()
        if "display:none" in style:
            self._hidden = (tag, 1)
            return
        if tag in ("style", "script", "head", "title"):
            self._skip += 1
        elif tag == "a":
            self._href = dict(attrs).get("href")
        elif tag in self._BLOCKS:
            self.out.append("\n")
        if tag == "li":
            self.out.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if self._hidden is not None:
            if tag == self._hidden[0]:
                depth = self._hidden[1] - 1
                self._hidden = (tag, depth) if depth else None
            return
        if tag in ("style", "script", "head", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag == "a" and self._href:
            self.out.append(f" ({self._href})")
            self._href = None
        elif tag in self._BLOCKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip and self._hidden is None:
            self.out.append(data)


def html_to_text(markup: str) -> str:
    """A readable plain-text alternative for email clients that do not show HTML."""
    parser = _TextExtractor()
    parser.feed(markup)
    text = html_lib.unescape("".join(parser.out))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


@dataclass(frozen=True)
class TemplateCheck:
    """What the loader needs to know about templates: the catalog and a renderer to compile them."""

    catalog: TemplateCatalog
    renderer: Renderer
