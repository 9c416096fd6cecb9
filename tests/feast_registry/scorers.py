"""A scorer over two Feast views' features, for the tests that run one through a job."""

from __future__ import annotations

from typing import Any

import pyarrow as pa


def gold_conv(rows: pa.Table) -> dict[str, Any]:
    """conv_rate (driver_hourly_stats) where tier (customer_profile) is gold, else 0."""
    conv = rows.column("conv_rate").to_pylist()
    tier = rows.column("tier").to_pylist()
    return {"gold_conv": [c if t == "gold" and c is not None else 0.0
                          for c, t in zip(conv, tier, strict=True)]}
