#!/usr/bin/env python
"""CPU seconds to build Feast entity ids (MurmurHash3 of each serialized key) for a million
entities, the way a pull and a shard build them, in one or more trees interleaved.

    .venv/bin/python scripts/bench_keys.py --rounds 5 --tree before=OLD_CHECKOUT --tree after=.

Cells (``--cells``), each on ``--keys`` distinct entities in shuffled order:
- ``pull_int`` / ``pull_text``: ``FeastLayout.unique_keys_for`` of a Python list of int64 /
  text values (what the CSV entity reader hands a console pull), without numpy as in
  ``featurepull pull`` (cli._lean_pull);
- ``shard_int``: the same of an Arrow int64 column (a shard's keys from Parquet), numpy there;
- ``ids_int`` / ``ids_text``: ``keys_for`` of the list (every row's id, ``entity_ids``);
- ``check_int``: ``check_keys`` of the int list (what a submit checks: no hashing).

Each (round, cell, tree) is a fresh process (PYTHONPATH=tree): it builds its input, warms up
on 1,000 keys, then times one call (user+sys CPU, ``time.process_time``, and wall). Trees
take turns within each round. ``--instructions`` counts the call's instructions under
valgrind instead (the process with the call less the same process without it), per key.
Prints the median and minimum per cell and tree, the ratio of the last tree to the first,
and checks that every tree made the same ids (a digest of them); saves JSON (``--json``).
The load average is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CELLS = ("pull_int", "pull_text", "shard_int", "ids_int", "ids_text", "check_int")

_CHILD = r"""
import hashlib, json, random, sys, time
# "call": time the call; "count": the call alone (valgrind counts); "skip": no call.
cell, size, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if cell.startswith("pull"):
    sys.modules["numpy"] = None  # as featurepull pull runs pyarrow
import pyarrow as pa
from featurepull.dynamo.layouts import FeastLayout

rng = random.Random(7)
numbers = list(dict.fromkeys(rng.randrange(-(2**62), 2**62) for _ in range(size)))
if cell.endswith("text"):
    values = [f"driver_{n % 10**rng.randint(3, 12)}_{i}" for i, n in enumerate(numbers)]
    kind = "string"
else:
    values, kind = numbers, "int64"
layout = FeastLayout({"driver_id": kind})
column = pa.array(values, pa.int64()) if cell == "shard_int" else values


def call(column):
    columns = {"driver_id": column}
    if cell.startswith(("pull", "shard")):
        keys, positions = layout.unique_keys_for(columns)
        return list(keys), positions
    if cell.startswith("ids"):
        return layout.keys_for(columns), None
    layout.check_keys(columns)
    return [], None


call(column[:1000])
start_cpu, start = time.process_time(), time.perf_counter()
keys, positions = call(column) if mode != "skip" else ([], None)
cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start
if mode != "call":
    sys.exit(0)
digest = hashlib.sha256("".join(keys).encode()).hexdigest()[:16]
if positions is not None:
    digest += "/" + hashlib.sha256(str(positions.to_pylist()).encode()).hexdigest()[:8]
print(json.dumps({"cpu": cpu, "wall": wall, "digest": digest}))
"""


def _run(tree: str, cell: str, size: int, instructions: bool = False) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
    child = [sys.executable, "-c", _CHILD, cell, str(size)]
    if not instructions:
        done = _child([*child, "call"], env, f"{tree} {cell}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result
    # The call's instructions: the child with it less the child without it (input, imports);
    # the ids' digest from a run of its own (it is not counted).
    counts = []
    for mode in ("count", "skip"):
        done = _child(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                       "--cachegrind-out-file=/dev/null", *child, mode], env, f"{tree} {cell}")
        found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        if found is None:
            raise SystemExit(f"{tree} {cell}: no instruction count in {done.stderr[-500:]}")
        counts.append(int(found.group(1).replace(",", "")))
    digest = _run(tree, cell, size)["digest"]
    return {"instructions": counts[0] - counts[1], "digest": digest}


def _child(command: list[str], env: dict[str, str], what: str) -> Any:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{what}: {done.stderr[-2000:]}")
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[],
                        help="NAME=DIR, a checkout whose featurepull package to run (repeat)")
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default="bench_keys.json")
    parser.add_argument("--instructions", action="store_true",
                        help="count the call's instructions under valgrind (cachegrind) instead "
                        "of timing it: load-independent; one round is enough")
    args = parser.parse_args(argv)
    trees = dict(item.split("=", 1) for item in args.tree) or {"this": "."}
    cells = [cell for cell in args.cells.split(",") if cell]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {c: {t: [] for t in trees} for c in cells}
    for _ in range(args.rounds):
        for cell in cells:
            for name, tree in trees.items():
                runs[cell][name].append(_run(tree, cell, args.keys, args.instructions))
    load = os.getloadavg()
    names = list(trees)
    measure = "instructions" if args.instructions else "cpu"
    what = "instructions per key" if args.instructions else "CPU seconds"
    print(f"{args.keys:,} keys, {args.rounds} rounds, load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {what}, median (min)")
    print(f"{'cell':<10}" + "".join(f"{n:>18}" for n in names)
          + (f"{names[-1] + '/' + names[0]:>14}" if len(names) > 1 else ""))
    table: dict[str, Any] = {}
    for cell in cells:
        digests = {run["digest"] for name in names for run in runs[cell][name]}
        if len(digests) != 1:
            raise SystemExit(f"{cell}: the trees' ids differ: {sorted(digests)}")
        per = args.keys if args.instructions else 1
        cpus = {name: [run[measure] / per for run in runs[cell][name]] for name in names}
        medians = {name: statistics.median(cpus[name]) for name in names}
        row = "".join(f"{medians[n]:>10.3f} ({min(cpus[n]):.3f})" if not args.instructions
                      else f"{medians[n]:>18,.0f}" for n in names)
        ratio = medians[names[-1]] / medians[names[0]] if len(names) > 1 else None
        print(f"{cell:<10}{row}" + (f"{ratio:>14.2f}" if ratio is not None else ""))
        table[cell] = {"runs": runs[cell], f"median_{measure}": medians, "ratio": ratio,
                       "digest": digests.pop()}
    Path(args.json).write_text(json.dumps({"keys": args.keys, "rounds": args.rounds,
                                           "load": load, "trees": trees, "cells": table},
                                          indent=1))
    print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
