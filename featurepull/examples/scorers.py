"""An example scorer, registered by ``featurepull demo``:

```toml
[[scorers]]
name = "driver_risk"
path = "featurepull.examples.scorers:driver_risk"
```

A scorer takes one shard's rows as a ``pyarrow.Table`` (entity keys, ``event_timestamp``,
the requested features, and ``_found``) and returns its score columns, one value per row
in row order. This one is a fixed-weight logistic model over the demo feature view's
``conv_rate``, ``acc_rate`` and ``avg_daily_trips``; an entity without an item has null
features, so its score is null too (Arrow's arithmetic propagates nulls).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

# Fixed weights of a made-up model: drivers who convert many offers but accept few, over
# many daily trips, score higher. avg_daily_trips is scaled to hundreds of trips.
INTERCEPT = -1.0
WEIGHTS = {"conv_rate": 2.0, "acc_rate": -2.5, "avg_daily_trips": 0.5 / 100}


def driver_risk(rows: pa.Table) -> dict[str, pa.Array]:
    """``risk`` in (0, 1): the logistic function of a weighted sum of three features."""
    logit = pa.scalar(INTERCEPT)
    for feature, weight in WEIGHTS.items():
        values = pc.cast(rows.column(feature), pa.float64())
        logit = pc.add(logit, pc.multiply(values, weight))
    risk = pc.divide(1.0, pc.add(1.0, pc.exp(pc.negate(logit))))
    return {"risk": risk}
