"""Validation of tenant and customer identifiers (they become file names and AAD)."""

from __future__ import annotations

import re

from authsvc.errors import InvalidInput

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


def check_id(value: str, field: str) -> str:
    if not value:
        raise InvalidInput(field, "is required")
    if not _ID.fullmatch(value):
        raise InvalidInput(
            field,
            f"{value[:40]!r} is not a valid identifier: 1-128 characters of letters, digits and ._:@- "
            "starting with a letter or digit",
        )
    return value


def is_id(value: str) -> bool:
    return bool(_ID.fullmatch(value))
