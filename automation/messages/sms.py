"""SMS length: how many segments a text is billed as.

Texts that only use the GSM-7 alphabet go 160 characters in one segment, 153 per segment
when split (the rest carries the concatenation header); characters from the GSM-7
extension table count double. Any other character (Cyrillic, Chinese, Persian, most
emoji) switches the whole message to UCS-2: 70 in one segment, 67 per segment when
split, counted in UTF-16 code units.
"""

from __future__ import annotations

import math

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


def encoding(text: str) -> str:
    return "GSM-7" if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text) else "UCS-2"


def segments(text: str) -> tuple[str, int, int]:
    """(encoding, segments, length in that encoding's units) of an SMS body."""
    if encoding(text) == "GSM-7":
        length = sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)
        single, multi = 160, 153
        kind = "GSM-7"
    else:
        length = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
        kind = "UCS-2"
    count = 1 if length <= single else math.ceil(length / multi)
    return kind, (count if length else 0), length
