"""The Jinja2 sandbox of rules and templates, with bounds on what one evaluation may cost.

Jinja's own sandbox keeps a template away from Python's internals, but not from asking for a
lot of work: `range(10**9)`, `'x' * 10**9`, `9 ** 9 ** 9`, or loops in loops that print nothing.
One such template would hold a worker thread (and the steps of every other contact in its batch)
for good. Here:

- `range` makes at most `MAX_RANGE` items (and `slice` at most as many slices); `*` and `**` refuse
  to make a string or list longer than the output budget (a list counted with all it holds, lists in
  lists and their strings), or a whole number longer than `MAX_INT_BITS` bits; `join` (the filter
  and `str.join`) refuses to make a string longer than the output budget, and so do `string`,
  `tojson`, `pprint` and printing a list; what takes a width
  (`center`, `indent`, `format`, `'%9999s' % x`, `'{:>9999}'.format(x)`, `ljust`, `zfill`, `replace`)
  refuses one that would make more than the output budget, and so do `+` and `~` (a string
  doubled in a loop);
- `lipsum` (any amount of text in one call, with no clock to stop it) is not there at all;
- while a template renders or a rule evaluates (`with Meter(budget)`), loops, calls and operators look at the clock
  (the thread's CPU time; a filter of a long string or list looks at it first) and the output is counted as it streams:
  past the time or size budget the render stops with `OverBudget`; a rule runs under a meter too
  (`expressions.RULE_BUDGET`);
- `unsafe_access` finds, before anything runs, the attribute names the sandbox would refuse
  (`__class__`, `mro`, `_private`) and the names it took away (`lipsum`), so `lifecycle validate`
  can point at them.
"""

from __future__ import annotations

import functools
import operator
import re
import string
import time
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import (
    do_center, do_format, do_indent, do_pprint, do_tojson, make_attrgetter, soft_str, sync_do_join,
    sync_do_slice,
)
from jinja2.sandbox import (
    UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
    SandboxedEnvironment,
)

from automation.config import Settings

#: The most items one `range(...)` may make.
MAX_RANGE = 10_000
#: The longest whole number `*` and `**` may make (about 1,200 digits).
MAX_INT_BITS = 4096
#: Output a template may make when no budget is running (rules): the default output budget.
DEFAULT_MAX_BYTES = 1_000_000
#: A render looks at the clock once in this many loop items, calls and bounded operations
#: (all counted together, so loops nested any way still look): a read of the thread's CPU clock
#: costs about 0.6 us, a loop step far less.
TICKS_PER_CLOCK = 32
#: A filter given a string or list longer than this looks at the clock before it runs (others tick).
LONG_INPUT = 1000
#: Filters whose one call costs a lot per character (measured on 1 MB: urlize 0.45 s, wordwrap 0.15 s,
#: title 0.09 s), and the longest text each takes: one call then stays within a few tens of milliseconds,
#: under the render budget, which is only looked at between calls.
SLOW_FILTERS = {"urlize": 100_000, "wordwrap": 200_000, "title": 300_000}
_LONG = (str, list, tuple, dict)
#: Attribute names the sandbox refuses besides those starting with `_` (jinja2.sandbox.is_internal_attribute).
UNSAFE_NAMES = frozenset({"mro"} | UNSAFE_GENERATOR_ATTRIBUTES | UNSAFE_COROUTINE_ATTRIBUTES
                         | UNSAFE_ASYNC_GENERATOR_ATTRIBUTES)
#: Globals Jinja offers that the sandbox takes away: `lipsum(n)` makes n paragraphs in one call.
REMOVED_GLOBALS = frozenset({"lipsum"})
_BUDGETED = "_budgeted"   # the filter wrapped around every loop's items
_SIZED = "_sized"         # ... and around every operand of `~`


class OverLimit(SecurityError):
    """A template or rule asked for more than one evaluation may make (a huge range, string, number)."""


class OverBudget(OverLimit):
    """A render or rule ran past its time or output budget; `what` names the budget ("render budget (100 ms)")."""

    def __init__(self, what: str) -> None:
        super().__init__(f"exceeded its {what}")
        self.what = what


@dataclass(frozen=True)
class RenderBudget:
    """What one message may cost to render: CPU time of the rendering thread and output size
    (UTF-8 bytes, all parts together)."""

    time_ms: int = 100
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def of(cls, settings: "Settings") -> "RenderBudget":
        return cls(settings.template_time_ms, settings.template_max_bytes)


class Meter:
    """The running budget of one render: a deadline and the bytes made so far.

    Time is the rendering thread's CPU time: on a busy machine a thread waits for a core or for
    the GIL, and that wait must not fail a good message; only the template's own work counts.
    The clock is first read at the first tick that looks at it: the few bounded steps before do
    not count, and a small render (most messages) reads no clock at all.
    """

    __slots__ = ("budget", "label", "deadline", "made", "repeated", "ticks", "_token")

    def __init__(self, budget: RenderBudget, label: str = "render") -> None:
        self.budget = budget
        self.label = label   # what the time budget is called in the error: "render", "rule"
        self.deadline: float | None = None
        self.made = 0
        self.repeated = 0   # what `*` repetitions made, printed or not (a macro's output is not streamed)
        self.ticks = 0
        self._token: Token[Meter | None] | None = None

    def __enter__(self) -> "Meter":
        """Run a render under this meter: the bounded operations of this thread see it."""
        self._token = _running.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _running.reset(self._token)
            self._token = None

    def check_time(self) -> None:
        now = time.thread_time()
        if self.deadline is None:
            self.deadline = now + self.budget.time_ms / 1000.0
        elif now > self.deadline:
            raise OverBudget(f"{self.label} budget ({self.budget.time_ms} ms)")

    def tick(self) -> None:
        """One loop item, call or operator: look at the clock now and then."""
        self.ticks += 1
        if not self.ticks % TICKS_PER_CLOCK:
            self.check_time()

    def add(self, size: int) -> None:
        self.made += size
        if self.made > self.budget.max_bytes:
            raise OverBudget(f"output budget ({self.budget.max_bytes} bytes)")

    def join(self, chunks: Iterable[str]) -> str:
        """The rendered text, counted as the template makes it.

        Chunks are counted in characters (a character is at least a byte, so a runaway stops
        early), the whole in UTF-8 bytes at the end. No clock here: what makes output is template
        text (bounded by the file), loops and calls, and those look at the clock.
        """
        out: list[str] = []
        limit = self.budget.max_bytes
        for chunk in chunks:
            self.made += len(chunk)
            if self.made > limit:
                raise OverBudget(f"output budget ({limit} bytes)")
            out.append(chunk)
        text = "".join(out)
        if not text.isascii():
            self.add(len(text.encode("utf-8", "surrogatepass")) - len(text))
        return text


_running: ContextVar[Meter | None] = ContextVar("lifecycle_render_meter", default=None)


def bounded_range(*args: int) -> range:
    items = range(*args)
    if len(items) > MAX_RANGE:
        raise OverLimit(f"range of {len(items)} items: a template or rule may use at most {MAX_RANGE}")
    return items


class _Budgeted:
    """A loop's items, looking at the render's clock as they go (a loop may print nothing)."""

    __slots__ = ("items",)

    def __init__(self, items: Any) -> None:
        self.items = items

    def __len__(self) -> int:   # TypeError when the items have no length: `loop.length` counts them then
        return len(self.items)

    def __iter__(self) -> Iterator[Any]:
        meter = _running.get()
        if meter is None:
            yield from self.items
            return
        tick = meter.tick
        for item in self.items:
            tick()
            yield item


def _limit() -> int:
    meter = _running.get()
    return meter.budget.max_bytes if meter is not None else DEFAULT_MAX_BYTES


def _check_size(size: int, what: str) -> None:
    limit = _limit()
    if size > limit:
        raise OverLimit(f"{what} would make {size} characters: at most {limit} (the output budget)")


_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _numbers(values: Iterable[Any]) -> Iterator[int]:
    return (v for v in values if type(v) is int)


def _check_printf(fmt: str, values: Any) -> None:
    """`fmt % values`: a width or precision (written, or taken from the values by `*`) over the limit."""
    for spec in _PRINTF.finditer(fmt):
        for part in spec.groups():
            if part == "*":
                for number in _numbers(values if isinstance(values, tuple) else (values,)):
                    _check_size(abs(number), "a width taken from the values")
            elif part:
                _check_size(int(part), f"the format {spec.group(0)!r}")


def _check_format(fmt: str, args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
    """`fmt.format(...)`: a width or precision over the limit, written or nested (`{:{w}}`)."""
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if not spec:
            continue
        for digits in re.findall(r"\d+", spec):
            _check_size(int(digits), f"the format spec {spec!r}")
        if "{" in spec:
            for number in _numbers([*args, *kwargs.values()]):
                _check_size(abs(number), "a width taken from the values")


#: str methods that take a size: what they would make, from the string and the arguments.
_SIZED_METHODS: dict[str, Any] = {
    "center": lambda s, width=0, *_: width, "ljust": lambda s, width=0, *_: width,
    "rjust": lambda s, width=0, *_: width, "zfill": lambda s, width=0: width,
    "expandtabs": lambda s, tabsize=8: len(s) + s.count("\t") * tabsize,
    "replace": lambda s, old="", new="", count=-1:
        len(s) + (s.count(old) if count < 0 else min(count, s.count(old))) * (len(new) - len(old))
        if isinstance(old, str) and isinstance(new, str) and old else 0,
}


#: Containers whose text (printed, joined, `string`) holds all they contain.
_CONTAINERS = (list, tuple, dict, set, frozenset)


def text_size(value: Any, limit: int) -> int:
    """About how many characters `str(value)` has, counting into lists in lists (and their
    strings); the count stops a little past `limit`, so a list holding itself a billion times
    over (`[a] * 10` in `[..] * 10` ...) costs no more to count than `limit` items.

    Strings count their length, whole numbers their digits, containers one more than what they
    hold, anything else 1: the count is a floor, good for refusing before the text is made.
    """
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, _CONTAINERS):
        return value.bit_length() * 3 // 10 + 1 if type(value) is int else 1
    sizes: dict[int, int] = {}   # by id: a list held many times over is counted once

    def size(item: Any, budget: int) -> int:
        if isinstance(item, str):
            return len(item)
        if type(item) is int:
            return item.bit_length() * 3 // 10 + 1
        if not isinstance(item, _CONTAINERS):
            return 1
        key = id(item)
        if key in sizes:
            return sizes[key]
        sizes[key] = 1   # a list that holds itself prints as [...]
        total = 1
        for inner in (item.items() if isinstance(item, dict) else item):
            total += size(inner, budget - total)
            if total > budget:
                break
        sizes[key] = total
        return total

    return size(value, limit)


def _check_text(value: Any, what: str) -> None:
    if isinstance(value, _CONTAINERS):
        limit = _limit()
        _check_size(text_size(value, limit), what)


def _join_size(parts: list[Any], separator: Any) -> int:
    limit = _limit()
    total = len(separator) * max(len(parts) - 1, 0) if isinstance(separator, str) else 0
    for part in parts:
        if total > limit:
            break
        total += len(part) if type(part) is str else text_size(part, limit - total)
    return total


def _join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    parts = list(value)
    if attribute is not None:
        parts = list(map(make_attrgetter(eval_ctx.environment, attribute), parts))
    _check_size(_join_size(parts, d), "join")
    return sync_do_join(eval_ctx, parts, d)


_join.jinja_pass_arg = sync_do_join.jinja_pass_arg  # type: ignore[attr-defined]


def _string(value: Any) -> str:
    _check_text(value, "string")
    return soft_str(value)


def _tojson(eval_ctx: Any, value: Any, indent: int | None = None) -> Any:
    _check_text(value, "tojson")
    return do_tojson(eval_ctx, value, indent)


_tojson.jinja_pass_arg = do_tojson.jinja_pass_arg  # type: ignore[attr-defined]


def _pprint(value: Any) -> str:
    _check_text(value, "pprint")
    return do_pprint(value)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    if isinstance(slices, int) and slices > MAX_RANGE:
        raise OverLimit(f"slice into {slices} parts: a template or rule may use at most {MAX_RANGE}")
    return sync_do_slice(value, slices, fill_with)


def _slow(name: str, function: Any, longest: int) -> Any:
    """A filter refused a text longer than `longest` (SLOW_FILTERS); anything else is measured as the text
    the filter makes of it (a list of words given to urlize is the text of the list)."""
    at = 1 if hasattr(function, "jinja_pass_arg") else 0   # the filtered value, after a context

    @functools.wraps(function)   # keeps `jinja_pass_arg`
    def bounded(*args: Any, **kwargs: Any) -> Any:
        value = args[at] if len(args) > at else None
        size = len(value) if isinstance(value, str) else text_size(value, longest + 1)
        if size > longest:
            raise OverLimit(f"{name} of {size:,} characters: a template may give it at most {longest:,}")
        return function(*args, **kwargs)

    return bounded


def _clocked(function: Any) -> Any:
    """A filter that looks at the clock before it runs: one filter call is bounded by its input
    (a string of at most the output budget), but `x|wordwrap|wordwrap|...` is as long as one likes."""

    at = 1 if hasattr(function, "jinja_pass_arg") else 0   # the filtered value, after a context

    @functools.wraps(function)   # keeps `jinja_pass_arg`
    def clocked(*args: Any, **kwargs: Any) -> Any:
        meter = _running.get()
        if meter is not None:
            # A filter of a long string or list may take a while: look at the clock before it;
            # small ones (most) only count towards the next look
            value = args[at] if len(args) > at else None
            if isinstance(value, _LONG) and len(value) > LONG_INPUT:
                meter.check_time()
            else:
                meter.tick()
        return function(*args, **kwargs)

    return clocked


def _printable(value: Any) -> Any:
    """What `{{ ... }}` prints: a list is refused before its text is made (the output budget counts
    the text only once it exists)."""
    _check_text(value, "printing a list")
    return value


def _sized(value: Any) -> Any:
    """An operand of `~`, refused past the output budget: a string doubled in a loop stops there."""
    if isinstance(value, str):
        _check_size(len(value), "joining with ~")
    return value


def _center(value: Any, width: int = 80) -> str:
    if isinstance(width, int):
        _check_size(width, "center")
    return do_center(value, width)


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    if isinstance(width, int):
        _check_size((str(s).count("\n") + 1) * width + len(str(s)), "indent")
    return do_indent(s, width, first, blank)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_printf(str(value), tuple(kwargs.values()) or args)
    return do_format(value, *args, **kwargs)


def _repeat_size(left: Any, right: Any, limit: int) -> int | None:
    """The size `left * right` would have when it repeats a string or list, else None: a list
    counts all it holds (`[[0] * 1000] * 1000` is a million), so lists repeated in lists add up."""
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, (str, bytes)) and isinstance(times, int):
            return len(seq) * max(times, 0)
        if isinstance(seq, (list, tuple)) and isinstance(times, int):
            if times <= 0:
                return 0
            # The brackets do not count: `[0] * n` has n items
            return (text_size(seq, limit // times + 1) - 1) * times
    return None


class BoundedSandbox(SandboxedEnvironment):
    """Jinja's sandbox with bounded `range`, repetition and powers, and loops that watch the clock."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.globals["range"] = bounded_range
        for name in REMOVED_GLOBALS:
            self.globals.pop(name, None)
        self.filters.update({_BUDGETED: _Budgeted, _SIZED: _sized, "center": _center, "indent": _indent,
                             "format": _format, "join": _join, "string": _string, "tojson": _tojson,
                             "pprint": _pprint, "slice": _slice})
        for name, longest in SLOW_FILTERS.items():
            self.filters[name] = _slow(name, self.filters[name], longest)
        for name, function in self.filters.items():
            if name not in (_BUDGETED, _SIZED):
                self.filters[name] = _clocked(function)
        if self.finalize is None:
            self.finalize = _printable

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        # (Jinja's own double-underscore names: a template may pass `obj=` or `context=` as keywords.)
        meter = _running.get()
        if meter is not None:
            meter.tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and getattr(__obj, "__name__", None) in _SIZED_METHODS:
            try:
                size = _SIZED_METHODS[__obj.__name__](owner, *args, **kwargs)
            except TypeError:
                size = 0   # wrong arguments: the call itself says what is wrong
            if isinstance(size, int):
                _check_size(size, f"{__obj.__name__}()")
        elif isinstance(owner, str) and getattr(__obj, "__name__", None) == "join" and len(args) == 1 \
                and not kwargs:
            parts = list(args[0])   # a generator is read once: join what was sized
            _check_size(_join_size(parts, owner), "join()")
            args = (parts,)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            mapping = args[0] if value.__name__ == "format_map" and args else kwargs
            _check_format(fmt, args if value.__name__ == "format" else (),
                          mapping if isinstance(mapping, Mapping) else {})
            return wrapped(*args, **kwargs)

        return checked

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        meter = _running.get()
        if meter is not None:
            meter.tick()
        if operator_name == "*":
            limit = meter.budget.max_bytes if meter is not None else DEFAULT_MAX_BYTES
            size = _repeat_size(left, right, limit)
            if size is not None:
                if meter is not None:   # all repetitions of one render together
                    meter.repeated += size
                    size = meter.repeated
                if size > limit:
                    raise OverLimit(f"repetition would make {size} items: at most {limit} in one render "
                                    "(the output budget)")
                return operator.mul(left, right)
            if _ints(left, right) and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
                raise OverLimit(f"a product of more than {MAX_INT_BITS} bits: numbers that large are refused")
            return operator.mul(left, right)
        if operator_name == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, type(left)):
            _check_size(len(left) + len(right), "adding with +")
        if operator_name == "%" and isinstance(left, str):
            _check_printf(left, right)
        if operator_name == "**" and _ints(left, right) and right > 0 \
                and max(abs(left).bit_length() - 1, 0) * right > MAX_INT_BITS:
            raise OverLimit(f"{left} ** {right} has more than {MAX_INT_BITS} bits: numbers that large are refused")
        return self.binop_table[operator_name](left, right)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        # Every `{% for %}` iterates through `_Budgeted`, so nested loops that print nothing still stop
        # at the deadline (a Jinja for-loop has no hook of its own).
        # And every operand of `~` is sized, so a string doubled in a loop stops at the output budget.
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _BUDGETED, [], [], None, None, lineno=loop.iter.lineno)
        for concat in tree.find_all(nodes.Concat):
            concat.nodes = [nodes.Filter(part, _SIZED, [], [], None, None, lineno=part.lineno)
                            for part in concat.nodes]
        return tree


def _ints(left: Any, right: Any) -> bool:
    return type(left) is int and type(right) is int


# -- static check --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Unsafe:
    """An attribute the sandbox would refuse, or a name it took away, where it is written (1-based
    line and column)."""

    line: int
    column: int
    name: str
    removed: bool = False   # a global the sandbox took away (`lipsum`), not an attribute

    @property
    def message(self) -> str:
        if self.removed:
            return f"{self.name!r} is not available: it can make any amount of text in one call"
        return f"unsafe attribute access {self.name!r}: templates may not reach Python internals or private names"

    @property
    def hint(self) -> str:
        if self.removed:
            return "write the placeholder text into the template, or pass it in the journey's vars"
        return ("print the data itself ({{ contact.email }}), or pass what the message needs in the "
                "journey's vars")


def is_unsafe_name(name: str) -> bool:
    return name.startswith("_") or name in UNSAFE_NAMES


def unsafe_access(env: SandboxedEnvironment, source: str) -> list[Unsafe]:
    """Attribute reads with a constant, unsafe name (`x.__class__`, `x['mro']`, `x|attr('_y')`), and
    uses of a removed global (`lipsum(3)`), in order."""
    tree = env.parse(source)
    found: list[tuple[int, str]] = []
    lines = source.splitlines()
    taken: set[tuple[int, int]] = set()
    result = []
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx != "load"}   # `{% set lipsum = ... %}`
    for used in tree.find_all(nodes.Name):
        if used.ctx == "load" and used.name in REMOVED_GLOBALS and used.name not in assigned:
            line = lines[used.lineno - 1] if used.lineno <= len(lines) else ""
            pattern = re.compile(r"(?<![\w.])" + re.escape(used.name) + r"(?!\w)")
            column = next((m.start() + 1 for m in pattern.finditer(line)
                           if (used.lineno, m.start() + 1) not in taken), 1)
            taken.add((used.lineno, column))
            result.append(Unsafe(used.lineno, column, used.name, removed=True))
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr):
            name: Any = node.attr
        elif isinstance(node, nodes.Getitem):
            name = node.arg.value if isinstance(node.arg, nodes.Const) else None
        else:
            name = node.args[0].value if node.name == "attr" and node.args \
                and isinstance(node.args[0], nodes.Const) else None
        if isinstance(name, str) and is_unsafe_name(name):
            found.append((node.lineno, name))
    for lineno, name in found:
        column = _column(lines[lineno - 1] if lineno <= len(lines) else "", name, lineno, taken)
        result.append(Unsafe(lineno, column, name))
    return sorted(result, key=lambda u: (u.line, u.column))


def _column(line: str, name: str, lineno: int, taken: set[tuple[int, int]]) -> int:
    """The 1-based column of `name` as an attribute on `line`, the first one not reported yet."""
    pattern = re.compile(r"(?:\.\s*|\[\s*['\"]|attr\(\s*['\"])(" + re.escape(name) + r")(?![A-Za-z0-9_])")
    for match in pattern.finditer(line):
        column = match.start(1) + 1
        if (lineno, column) not in taken:
            taken.add((lineno, column))
            return column
    return 1
