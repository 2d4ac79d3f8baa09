"""Locale negotiation: which of the locales we have a contact's BCP 47 tag gets.

Templates (`welcome.zh-TW.html`), the values of `templates/defaults.yaml` and the unsubscribe page
all ask this module, so a contact gets one answer everywhere. Tags are compared case-insensitively
(`zh-tw`, `zh_TW`), after Babel fills in CLDR's likely subtags: `zh-HK` is `zh-Hant-HK`, `zh-Hant`
is `zh-Hant-TW`, `zh` and `zh-CN` are `zh-Hans-CN`. A tag matches a locale we have when both agree
on language and script; among several, the same region wins, then the language's usual form
(`en` before `en-AU`). So `zh-HK` and `zh-Hant` get `zh-TW`, while `zh-CN` gets no Traditional
Chinese at all, `ru-RU` gets `ru` and `en-GB` gets `en`.

Babel's own `negotiate_locale` is not used: it matches `zh-HK` to nothing and would take a bare
`zh` file for a Traditional reader, because it compares tags, not scripts.
"""

from __future__ import annotations

from functools import lru_cache

from babel import Locale, UnknownLocaleError
from babel.core import get_global, parse_locale

#: What everything falls back to last: the language the shipped templates and defaults are written in.
FALLBACK_LOCALE = "en"

#: (language, script, region) of a tag with CLDR's likely subtags added; script and region may stay None
#: for languages CLDR does not know.
Subtags = tuple[str, str | None, str | None]

_LIKELY: dict[str, str] = get_global("likely_subtags")


@lru_cache(maxsize=4096)
def subtags(tag: str | None) -> Subtags | None:
    """The language, script and region a tag stands for, or None for an empty or malformed tag."""
    if not tag or not isinstance(tag, str):
        return None
    parts = tag.strip().replace("_", "-").split("-")
    for index, part in enumerate(parts):
        if len(part) == 1:  # extensions (-u-ca-gregory) and private use (-x-...) say nothing about language
            parts = parts[:index]
            break
    text = "-".join(parts)
    if not text:
        return None
    try:
        language, region, script = parse_locale(text, sep="-")[:3]
    except ValueError:
        return None
    try:
        # Babel knows the language's other names (iw -> he); a script or region the tag names stays.
        locale = Locale.parse(text, sep="-")
        language, script, region = locale.language, script or locale.script, region or locale.territory
    except (UnknownLocaleError, ValueError):
        pass  # a language without CLDR data still matches files written with the same tag
    return _maximized(language, script, region)


def _maximized(language: str, script: str | None, region: str | None) -> Subtags:
    """CLDR's "add likely subtags": fill in the script and region a language is usually written with."""
    keys = (f"{language}_{script}_{region}" if script and region else None,
            f"{language}_{region}" if region else None,
            f"{language}_{script}" if script else None,
            language)
    for key in keys:
        if key and key in _LIKELY:
            _, likely_region, likely_script = parse_locale(_LIKELY[key])[:3]
            return language, script or likely_script, region or likely_region
    return language, script, region


@lru_cache(maxsize=8192)
def negotiate(wanted: str | None, available: frozenset[str]) -> str | None:
    """The locale of `available` that suits a reader of `wanted`, or None when none does."""
    want = subtags(wanted)
    if want is None or not available:
        return None
    best: tuple[bool, bool, int, str] | None = None
    for tag in available:
        have = subtags(tag)
        if have is None or have[:2] != want[:2]:   # Traditional and Simplified Chinese are different scripts
            continue
        usual = _maximized(have[0], have[1], None)[2]
        rank = (have[2] != want[2], have[2] != usual, len(tag), tag)
        if best is None or rank < best:
            best = rank
    return best[-1] if best is not None else None


def locale_chain(locale: str | None, default: str | None) -> list[str | None]:
    """What to look for, in order: the contact's locale, the journey's, a file without a locale (one
    for every language), then English. Each locale is negotiated against what exists."""
    chain: list[str | None] = [option for option in dict.fromkeys((locale, default)) if subtags(option)]
    return chain + [None] + ([FALLBACK_LOCALE] if FALLBACK_LOCALE not in chain else [])


@lru_cache(maxsize=1024)
def text_direction(locale: str | None) -> str:
    """`rtl` for locales written right to left (Persian, Arabic, Hebrew ...), else `ltr` (CLDR's)."""
    found = subtags(locale)
    if found is None:
        return "ltr"
    language, script, _ = found
    for identifier in (f"{language}_{script}" if script else None, language):
        if identifier:
            try:
                return Locale.parse(identifier).text_direction
            except (UnknownLocaleError, ValueError):
                continue
    return "ltr"
