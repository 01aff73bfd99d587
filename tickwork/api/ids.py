"""Ids in paths and query strings are plain decimal: ``1``, never ``1.0``, ``01``, ``+1`` or `` 1``.

pydantic's lax integer parsing would read all of those as 1, so one job would answer to many
URLs; :data:`PLAIN_DECIMAL` refuses them (422 naming the parameter) before the range check.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BeforeValidator

#: The largest id a job or run can have (a signed 64-bit column).
MAX_ID = 2**63 - 1
_PLAIN_DECIMAL_RE = re.compile(r"0|[1-9][0-9]{0,18}")


def plain_decimal(value: Any) -> Any:
    """A path or query value as written: digits only, no sign, no leading zero, at most 19 digits."""
    if isinstance(value, str) and not _PLAIN_DECIMAL_RE.fullmatch(value):
        if value.isascii() and value.isdigit():
            raise ValueError("must be a plain decimal integer (no leading zeros) below 2**63")
        raise ValueError("must be a plain decimal integer (digits only)")
    return value


#: ``Annotated[int, PLAIN_DECIMAL, Path(...)]``: refuse other spellings of a number.
PLAIN_DECIMAL = BeforeValidator(plain_decimal)
