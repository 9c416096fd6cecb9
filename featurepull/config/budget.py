"""The form of a read budget (``dynamodb.max_rcu_per_s``, ``dynamodb.table_budgets``): RCU
per second, or a percentage of the table's read capacity that the reader resolves once it
has described the table (``featurepull.dynamo.pacing``)."""

from __future__ import annotations

import math

BUDGET_ALLOWED = ("a number of RCU per second above 0 (e.g. 2000), or a percentage above 0 "
                  "and at most 100 of the table's read capacity (e.g. 50%)")


def parse_budget(value: object) -> float | str | None:
    """A budget as given (flag, env, TOML): RCU/s as a float, ``"N%"``, or None.

    Raises ValueError naming what is allowed. The settings validators call it."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"must be {BUDGET_ALLOWED}; got {value!r}")
    text = str(value).strip()
    percent = text.endswith("%")
    try:
        number = float(text[:-1] if percent else text)
    except ValueError:
        raise ValueError(f"must be {BUDGET_ALLOWED}; got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"must be {BUDGET_ALLOWED}; got {value!r}")
    if percent:
        if number > 100:
            raise ValueError(f"must be {BUDGET_ALLOWED}; got {value!r} (a table cannot give "
                             "more than all of its capacity)")
        return f"{number:g}%"
    return number
