"""File names as they appear in one-line messages.

A name may hold a newline, a tab, an escape sequence or bytes that are not text: printed raw it
would split a one-line error in two or drive the terminal. :func:`shown` writes such characters as
Python-style escapes (``\\n``, ``\\x1b``); ordinary text, spaces and non-ASCII letters stay as they are.
JSON output keeps the real names (JSON escapes them itself).
"""
from __future__ import annotations

import os
import re

# C0 and C1 controls, DEL, line/paragraph separators, and lone surrogates (undecodable name bytes)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match) -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    o = ord(c)
    if 0xDC80 <= o <= 0xDCFF:  # surrogateescape: the undecodable byte itself
        return f"\\x{o - 0xDC00:02x}"
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def shown(path) -> str:
    """``path`` (a str, Path or bytes) for a one-line message: control characters escaped."""
    s = os.fsdecode(path) if isinstance(path, bytes) else str(path)
    return _UNSAFE.sub(_escape, s)
