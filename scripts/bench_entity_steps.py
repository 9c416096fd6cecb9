#!/usr/bin/env python
"""CPU seconds of a pull's steps before its read, each in a process of its own: the CSV entity
file read and typed (`read_entities`), and the Feast keys built from its columns as `pull`
hands them over (`unique_keys`: the Arrow arrays where the tree's reader keeps them,
`EntityTable.arrays`, else the Python lists).

    .venv/bin/python scripts/bench_entity_steps.py [--rows 1000000] [--rounds 5] \\
        [--tree before=OLD_CHECKOUT --tree after=.] [--instructions] [--json-out FILE]

The file is the whole-process bench's: one int64 `driver_id` column of distinct shuffled ids.
Only the steps are timed (user+sys of the process), as in a console pull: the cyclic
collector off, pyarrow without numpy and pandas (`cli._NOT_FOR_A_PULL`). Each ``--tree
NAME=DIR`` runs the featurepull package of DIR (first on PYTHONPATH); trees take turns
within every round, and each cell's best round is printed. ``--instructions`` counts each
step's instructions instead (cachegrind, unmoved by the machine's load): a child run to the
end of each step, each step the difference of two runs.
"""

from __future__ import annotations

import argparse
import gc
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

STEPS = ("entity_file", "keys")
RESULT = "STEP-RESULT "


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(size: int, folder: Path, stop: str = "") -> dict[str, float]:
    from featurepull.cli import _NOT_FOR_A_PULL, _Blocked

    sys.meta_path.insert(0, _Blocked(_NOT_FOR_A_PULL))  # as a console pull runs pyarrow
    from featurepull.dynamo.layouts import FeastLayout, unique_keys
    from featurepull.io import read_entities

    path = folder / "ids.csv"
    ids = random.Random(1).sample(range(1_000_000, 1_000_000 + 10 * size), size)
    path.write_text("driver_id\n" + "".join(f"{i}\n" for i in ids))
    layout = FeastLayout({"driver_id": "int64"})
    gc.disable()
    if stop == "setup":
        return {}
    started = _cpu()
    entities = read_entities(str(path))
    read = _cpu()
    if stop == "entity_file":
        return {}
    # As pull._key_source hands them: an Arrow array where the reader made one (without
    # asking for the Python values of a column that makes them on demand).
    arrays = getattr(entities, "arrays", {})
    columns = {name: arrays[name] if name in arrays else entities.columns[name]
               for name in entities.columns}
    keys, _ = unique_keys(layout, columns, entities.source)
    done = _cpu()
    assert len(keys) == size
    return {"entity_file": read - started, "keys": done - read}


def run(trees: Sequence[tuple[str, str]], size: int, rounds: int) -> list[dict[str, Any]]:
    """Every tree, `rounds` times, in turn; each (tree, step)'s best round."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(rounds):
        for name, tree in trees:
            env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
            if tree:
                env["PYTHONPATH"] = str(Path(tree).resolve())
            with tempfile.TemporaryDirectory(prefix="featurepull-entity-steps-") as folder:
                out = subprocess.run([sys.executable, __file__, "--child", str(size), folder],
                                     env=env, cwd=folder, capture_output=True, text=True,
                                     check=True).stdout
            result = json.loads(out.split(RESULT, 1)[1])
            for step in STEPS:
                sample = {"tree": name, "step": step, "rows": size, "cpu_s": result[step],
                          "load_average": round(os.getloadavg()[0], 1)}
                print(json.dumps(sample), file=sys.stderr)
                if (name, step) not in best or sample["cpu_s"] < best[name, step]["cpu_s"]:
                    best[name, step] = sample
    return list(best.values())


def instructions(trees: Sequence[tuple[str, str]], size: int) -> list[dict[str, Any]]:
    """Each step's instructions (valgrind's cachegrind): the child run to the end of the
    setup, of the entity file and of the keys, each step the difference of two runs."""
    results = []
    for name, tree in trees:
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        # One hash seed: runs that differ only in where they stop (randomized, two runs of
        # the same stop differed by up to 3 M instructions; with a fixed seed, by ~20).
        env["PYTHONHASHSEED"] = "0"
        if tree:
            env["PYTHONPATH"] = str(Path(tree).resolve())
        counts = []
        for stop in ("setup", "entity_file", "keys"):
            with tempfile.TemporaryDirectory(prefix="featurepull-entity-steps-") as folder:
                out = subprocess.run(
                    ["valgrind", "--tool=cachegrind", "--cache-sim=no",
                     "--cachegrind-out-file=/dev/null", sys.executable, __file__, "--child",
                     str(size), folder, stop], env=env, cwd=folder, capture_output=True,
                    text=True, check=True).stderr
            refs = [line for line in out.splitlines() if "I   refs" in line or "I refs" in line]
            counts.append(int(refs[-1].split(":")[1].strip().replace(",", "")))
        for step, before, after in zip(STEPS, counts[:-1], counts[1:], strict=True):
            results.append({"tree": name, "step": step, "rows": size,
                            "instructions": after - before})
    return results


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--child"]:
        stop = sys.argv[4] if len(sys.argv) > 4 else ""
        print(RESULT + json.dumps(child(int(sys.argv[2]), Path(sys.argv[3]), stop)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tree", action="append", default=[],
                        type=lambda text: tuple(text.split("=", 1)), metavar="NAME=DIR")
    parser.add_argument("--instructions", action="store_true",
                        help="instructions per step under cachegrind (one run each) instead")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    trees = args.tree or [("installed", "")]
    if args.instructions:
        results, field, unit, scale = instructions(trees, args.rows), "instructions", "M", 1e6
    else:
        results, field, unit, scale = run(trees, args.rows, args.rounds), "cpu_s", "CPU s", 1
    print(f"{f'step ({unit})':<16}" + "".join(f"{name:>12}" for name, _ in trees))
    for step in STEPS:
        row = {r["tree"]: r[field] / scale for r in results if r["step"] == step}
        print(f"{step:<16}" + "".join(f"{row[name]:>12,.3f}" for name, _ in trees))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
