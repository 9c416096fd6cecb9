#!/usr/bin/env python
"""CPU seconds of the output steps alone, each in a process of its own: a pull's `write_rows`,
a job finisher publishing its staged parts, the text lines alone (`write_texts` of
ready field texts), and the field texts alone (every chunk's, as `write_rows` makes them),
for CSV, JSONL and Parquet.

    .venv/bin/python scripts/bench_output_steps.py [--rows 1000000] [--found-share 0.1,1.0] \\
        [--steps write_rows,publish,lines,texts] [--formats csv,jsonl,parquet] [--rounds 3] \\
        [--tree before=OLD_CHECKOUT --tree after=.] [--json-out FILE]

The rows are the whole-process bench's (`featurepull.bench.endpoint`): one int64 key, UTC
event times, then a float, a double, an int, a city and a Unix timestamp per found driver,
decoded as the reader decodes them (answers of 100 items, the layout's column decoder) and
held as a read holds them (`FoundRows`, found items in shuffled order). The finisher's parts
are 50,000 rows each, staged as shards stage them.
Only the step is timed (user+sys of the process, around the call); the inputs are built
first. Each ``--tree NAME=DIR`` runs the featurepull package of DIR (first on PYTHONPATH);
trees take turns within every round, and each cell's best round is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STEPS = ("write_rows", "publish", "lines", "texts")
FORMATS = ("csv", "jsonl", "parquet")
PART_ROWS = 50_000
RESULT = "STEP-RESULT "


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rows(size: int, share: float) -> tuple[list[int], Any]:
    """The key column and a read's `FoundRows` of `size` drivers, `share` of them found:
    answers of 100 items decoded by the Feast layout's column decoder, and grown into the
    read's found columns, as the reader does (`extend_column`, where the tree has it)."""
    from featurepull.bench.endpoint import FEATURES, SyntheticTable
    from featurepull.dynamo.found import FoundRows
    from featurepull.dynamo.layouts import FeastLayout

    try:
        from featurepull.arrow_columns import extend_column
    except ImportError:  # a tree from before time columns: lists extended
        def extend_column(kept: list[Any], values: list[Any]) -> list[Any]:
            kept.extend(values)
            return kept

    table = SyntheticTable(size)
    rng = random.Random(7)
    found = sorted(rng.sample(range(size), round(size * share)))
    rng.shuffle(found)  # in the order answers come back
    decode = FeastLayout({"driver_id": "int64"}).columns_decoder(FEATURES)
    columns: list[list[Any]] = [[] for _ in range(6)]
    for start in range(0, len(found), 100):
        answer = decode([table.item(driver) for driver in found[start:start + 100]])
        columns = [extend_column(kept, values)
                   for kept, values in zip(columns, answer, strict=True)]
    return list(range(size)), FoundRows(list(range(size)), size, found, columns)


def child(step: str, fmt: str, size: int, share: float, folder: Path) -> dict[str, Any]:
    """One step, timed, in this process."""
    from featurepull.bench.endpoint import FEATURES
    from featurepull.io import write_rows
    from featurepull.io._columnar import columnar_table
    from featurepull.io._row_view import RowView

    keys, rows = _rows(size, share)
    output = str(folder / f"out.{fmt}")
    if step == "write_rows":
        started = _cpu()
        write_rows(output, {"driver_id": keys}, rows, FEATURES)
        return {"cpu_s": _cpu() - started}
    if step == "texts":
        from featurepull.io._row_view import CHUNK_ROWS
        from featurepull.io.rows import _column_texts

        view = RowView(output, {"driver_id": keys}, rows, FEATURES)
        started = _cpu()
        chunk = _column_texts(view, fmt)  # type: ignore[arg-type]
        assert chunk is not None
        for start in range(0, size, CHUNK_ROWS):
            assert chunk(start, min(start + CHUNK_ROWS, size)) is not None
        return {"cpu_s": _cpu() - started}
    table = columnar_table(RowView(output, {"driver_id": keys}, rows, FEATURES))
    assert table is not None
    if step == "publish":
        import pyarrow as pa

        from featurepull.io.parts import StagedOutput

        parts = StagedOutput(output, "bench", -(-size // PART_ROWS))
        schemas, part_rows = [], []
        for n in range(parts.parts):
            part = table.slice(n * PART_ROWS, PART_ROWS)
            parts.write_part(n, part)
            schemas.append(part.schema)
            part_rows.append(part.num_rows)
        started = _cpu()
        parts.publish(pa.unify_schemas(schemas), schemas, part_rows)
        return {"cpu_s": _cpu() - started}
    from featurepull.io._encoders import text_encoder
    from featurepull.io._row_view import CHUNK_ROWS
    from featurepull.io._text_columns import text_array

    batches = [[text_array(column, fmt) for column in batch.columns]  # type: ignore[arg-type]
               for batch in table.to_batches(max_chunksize=CHUNK_ROWS)]
    with open(os.devnull, "wb") as stream:
        encoder = text_encoder(fmt, stream, table.column_names, output)  # type: ignore[arg-type]
        started = _cpu()
        for texts in batches:
            assert encoder.write_texts(texts)
        encoder.finish()
        return {"cpu_s": _cpu() - started}


def run(trees: Sequence[tuple[str, str]], cells: Sequence[tuple[str, str, float]], size: int,
        rounds: int) -> list[dict[str, Any]]:
    """Every cell of every tree, `rounds` times, trees in turn; the best round of each."""
    best: dict[tuple[str, str, str, float], dict[str, Any]] = {}
    for _ in range(rounds):
        for step, fmt, share in cells:
            for name, tree in trees:
                env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
                if tree:
                    env["PYTHONPATH"] = str(Path(tree).resolve())
                with tempfile.TemporaryDirectory(prefix="featurepull-steps-") as folder:
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", step, fmt, str(size), str(share),
                         folder], env=env, cwd=folder, capture_output=True, text=True,
                        check=True).stdout
                result = json.loads(out.split(RESULT, 1)[1])
                result.update(tree=name, step=step, format=fmt, found_share=share, rows=size,
                              load_average=round(os.getloadavg()[0], 1))
                key = (name, step, fmt, share)
                if key not in best or result["cpu_s"] < best[key]["cpu_s"]:
                    best[key] = result
                print(json.dumps(result), file=sys.stderr)
    return list(best.values())


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--child"]:
        step, fmt, size, share, folder = sys.argv[2:7]
        result = child(step, fmt, int(size), float(share), Path(folder))
        print(RESULT + json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--found-share", default="0.1,1.0",
                        type=lambda text: [float(share) for share in text.split(",")])
    parser.add_argument("--steps", default=",".join(STEPS), type=lambda text: text.split(","))
    parser.add_argument("--formats", default=",".join(FORMATS), type=lambda text: text.split(","))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", action="append", default=[],
                        type=lambda text: tuple(text.split("=", 1)), metavar="NAME=DIR")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    if set(args.steps) - set(STEPS) or set(args.formats) - set(FORMATS):
        parser.error(f"steps: {', '.join(STEPS)}; formats: {', '.join(FORMATS)}")
    cells = [(step, fmt, share) for share in args.found_share for step in args.steps
             for fmt in args.formats if not (step in ("lines", "texts") and fmt == "parquet")]
    results = run(args.tree or [("installed", "")], cells, args.rows, args.rounds)
    print(f"{'step':<12}{'format':<9}{'found':>6}  " + "".join(
        f"{name:>12}" for name, _ in args.tree or [("cpu_s", "")]))
    for step, fmt, share in cells:
        row = {result["tree"]: result["cpu_s"] for result in results
               if (result["step"], result["format"], result["found_share"]) == (step, fmt, share)}
        print(f"{step:<12}{fmt:<9}{share:>6.0%}  "
              + "".join(f"{cpu:>12.3f}" for cpu in row.values()))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
