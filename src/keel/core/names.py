"""Validation of user-chosen names (projects, prompts, datasets, routes, labels, keys).

Names end up in URLs, file names and log lines, so they are restricted to a safe alphabet:
this turns path traversal and SQL metacharacters into a clear 400 instead of a surprise.
"""

from __future__ import annotations

import re

from keel.errors import InvalidInputError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a safe name, else raise :class:`InvalidInputError`."""
    if not isinstance(value, str) or not _NAME.match(value) or ".." in value:
        shown = value if isinstance(value, str) and len(value) <= 80 else f"{str(value)[:80]}…"
        raise InvalidInputError(
            f"invalid {what} {shown!r}",
            hint=f"a {what} is 1-128 characters of letters, digits, '.', '_' and '-', starting with a letter or digit, without '..'",
        )
    return value
