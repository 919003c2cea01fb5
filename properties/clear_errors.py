"""What counts as a clear error when a processor refuses an input.

A clear error is a `ValueError` or `TypeError` (the exceptions Python code raises for a bad
argument) whose message speaks about the caller's input. Messages that the interpreter or a
native binding writes about its own internals ("list index out of range", "division by zero",
"Python int too large to convert to C long") say that the processor never checked its input:
they are not clear, even when their type happens to be `TypeError`.
"""

from __future__ import annotations

import re

CLEAR_TYPES = (ValueError, TypeError)

# Written by CPython / numpy / pyo3 about their own internals, never about a processor's argument.
INTERNAL_MESSAGES = re.compile(
    "|".join(
        (
            r"index out of range",
            r"object is not iterable",
            r"has no len\(\)",
            r"object is not subscriptable",
            r"cannot be interpreted as an integer",
            r"unhashable type",
            r"object has no attribute",
            r"too (large|small) to (convert|fit)",
            r"division by zero",
            r"unsupported operand type",
            r"takes \d+ positional arguments? but \d+ (was|were) given",
            r"cannot reshape array",
            r"operands could not be broadcast",
        )
    )
)


def unclear(exc: BaseException) -> str | None:
    """Why `exc` is not a clear error, or None when it is one."""
    if not isinstance(exc, CLEAR_TYPES):
        return f"{type(exc).__name__} is neither a ValueError nor a TypeError"
    message = str(exc).strip()
    if not message:
        return "the message is empty"
    internal = INTERNAL_MESSAGES.search(message)
    if internal:
        return f"the message ({internal.group(0)!r}) is the interpreter's, not about the input"
    return None


def describe(exc: BaseException, limit: int = 160) -> str:
    """`Type: first line of the message`, cut to `limit` characters."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    return f"{type(exc).__name__}: {first[:limit]}"


def short(value, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters, for failure messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
