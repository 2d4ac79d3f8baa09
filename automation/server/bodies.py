"""Request bodies as the ingest API accepts them: bounded in size and time, UTF-8 JSON, not too deep.

Every refusal is an HTTPError with a 4xx status and a sentence saying why; nothing here can answer
500 or wait forever on a client.
"""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from typing import Any

from starlette.requests import Request

from automation.server.webhooks import HTTPError

#: A request to the ingest API (a batch) is at most this large, decompressed.
MAX_REQUEST_BYTES = 500 * 1024
#: Objects and arrays nested deeper than this are refused (Segment's payloads need a handful).
MAX_DEPTH = 32
#: A \uD800-\uDFFF escape: JSON can carry a lone UTF-16 surrogate, which is no character at all.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


async def read_body(request: Request, limit: int, timeout: float, require_length: bool = True) -> bytes:
    """The whole body, within `limit` bytes and `timeout` seconds (a client sending slowly, or
    fewer bytes than its Content-Length, gets 408 rather than holding the request open).
    `require_length=False`: a request without Content-Length has an empty body (a mail client's
    one-click unsubscribe may send none)."""
    length = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if length is None and not chunked and require_length:
        raise HTTPError("411 Length Required", "send the body with a Content-Length header")
    if length is not None and int(length) > limit:    # the HTTP parser has checked it is a number
        raise HTTPError("413 Content Too Large", f"the body is larger than {limit // 1024} KB")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise HTTPError("413 Content Too Large", f"the body is larger than {limit // 1024} KB")
    except TimeoutError:
        raise HTTPError("408 Request Timeout", f"the body did not arrive within {timeout:g} seconds") from None
    return _decoded(bytes(body), request.headers.get("content-encoding", ""), limit)


def _decoded(body: bytes, encoding: str, limit: int) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise HTTPError("415 Unsupported Media Type", f"Content-Encoding {encoding!r}: use gzip or none")
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflate.decompress(body, limit + 1)   # a small bomb must not inflate past the limit
    except zlib.error:
        raise HTTPError("400 Bad Request", "the body is not valid gzip") from None
    if len(data) > limit:
        raise HTTPError("413 Content Too Large", f"the body is larger than {limit // 1024} KB decompressed")
    return data


def parse_json(body: bytes) -> Any:
    """The body as JSON: UTF-8, well-formed, at most MAX_DEPTH levels deep."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise HTTPError("400 Bad Request", f"the body is not UTF-8 (byte {error.start})") from None
    if not text.strip():
        raise HTTPError("400 Bad Request", "the body is empty; send a JSON object")
    try:
        value = json.loads(text)
    except RecursionError:
        raise HTTPError("400 Bad Request", f"the JSON is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:
        raise HTTPError("400 Bad Request", f"the body is not JSON: {error}") from None
    _check_depth(value)
    if SURROGATE_ESCAPE.search(text):   # rare (emoji escaped as pairs): then check the strings whole
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise HTTPError("400 Bad Request", "a string holds an unpaired UTF-16 surrogate (an escape such as "
                                               "\\ud800)") from None
    return value


def _check_depth(value: Any) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            raise HTTPError("400 Bad Request", f"the JSON is nested deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)
