"""DynamoDB attribute values (the low-level ``{"N": "1"}`` form) to Python values, without
boto3's TypeDeserializer: no Decimal on the way for the common integral case.

N → int when integral, else float; SS/NS/BS → sorted lists; M → dict; L → list;
B → bytes; BOOL → bool; NULL → None.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any


def number(text: str) -> int | float:
    """A DynamoDB number string as int when integral, else float."""
    try:
        return int(text)
    except ValueError:
        pass
    dec = Decimal(text)
    if dec == dec.to_integral_value():
        return int(dec)
    return float(text)


def canonical_number(text: str) -> Decimal:
    """A number key in a form equal for "5", "5.0" and "5E0" (DynamoDB normalizes numbers)."""
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "S": lambda v: v,
    "N": number,
    "B": bytes,
    "BOOL": bool,
    "NULL": lambda v: None,
    "SS": sorted,
    "NS": lambda v: sorted(number(x) for x in v),
    "BS": lambda v: sorted(bytes(x) for x in v),
    "M": lambda v: {k: decode_attribute(x) for k, x in v.items()},
    "L": lambda v: [decode_attribute(x) for x in v],
}


def decode_attribute(value: dict[str, Any]) -> Any:
    """One attribute value in DynamoDB's JSON form as a Python value."""
    for tag, inner in value.items():
        return _DECODERS[tag](inner)
    return None
