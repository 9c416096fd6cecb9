"""Apply each of issue 21's ten regressions to a copy of the code, one at a time, and run the
tests that should catch it; print which tests failed. Every mutation must fail at least one.

    .venv/bin/python scripts/ten_mutations.py            # all ten, ~5 minutes on 2 cores
    .venv/bin/python scripts/ten_mutations.py --only 3,7 # by number

The working tree is never edited: the repository's tracked files are copied to a temporary
folder, one line (or two) changed there, and pytest run in that copy — the worker processes
and `python -m featurepull` subprocesses that the tests start import the copy too. Exit 0
when every mutation was caught.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    """``old`` → ``new`` inside ``function`` of ``path``; ``tests`` are pytest arguments."""

    name: str
    path: str
    function: str
    edits: tuple[tuple[str, str], ...]
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation("reader drops UnprocessedKeys", "featurepull/dynamo/reader.py", "_take_answer",
             (("outcome.unprocessed = [wanted[key_of(key)] for key in left]",
               "outcome.unprocessed = []"),),
             ("tests/dynamo/test_faults.py",)),
    Mutation("dedupe disabled", "featurepull/dynamo/reader.py", "_ReadState.__init__",
             (("setdefault(key, len(index)) for key in keys]\n"
               "            self.keys: Sequence[Hashable] = list(index)",
               "i for i, key in enumerate(keys)]\n"
               "            self.keys: Sequence[Hashable] = list(keys)"),),
             ("tests/dynamo/test_reader.py",)),
    Mutation("finisher writes shards in text order", "featurepull/io/parts.py",
             # A local Parquet output's parts are spliced (finish3): that is the path the
             # test's job takes.
             "_publish_spliced",
             (("for n, check in enumerate(checks):",
               "for n, check in sorted(enumerate(checks), key=lambda part: str(part[0])):"),),
             ("tests/tasks/test_jobs_on_the_wire.py", "-k", "ten_shards")),
    Mutation("event timestamps shifted 1 h", "featurepull/dynamo/layouts.py", "event_times",
             # Both forms an answer's times are kept in: the datetimes and the texts the
             # Arrow output parses.
             (("time_column(map(datetime.fromisoformat, texts), texts, \"iso\")",
               "time_column(*(lambda shifted: (shifted, [t.isoformat() for t in shifted]))("
               "[datetime.fromisoformat(text) + timedelta(hours=1) for text in texts]), "
               "\"iso\")"),),
             ("tests/test_cli_pull.py", "-k", "input_order")),
    Mutation("CLI submit ignores --overwrite and --wait", "featurepull/cli.py", "submit_command",
             (('overwrite=opts["overwrite"]', "overwrite=False"),
              ('if not opts["wait"]:', "if True:")),
             ("tests/test_cli_submit.py", "-k", "overwrite or json_shard_size")),
    Mutation("job errors stored in Redis no longer redacted",
             "featurepull/tasks/celery_tasks.py", "fail_job",
             (("error = redact_text(error)", "error = error"),),
             ("tests/tasks/test_jobs_on_the_wire.py", "-k", "secret")),
    Mutation("a throttle no longer holds back new requests", "featurepull/dynamo/reader.py",
             "_retry_later",
             (("state.pause_until = max(state.pause_until, now + delay)", "pass"),),
             ("tests/dynamo/test_throttle_holdback.py", "tests/tasks/test_jobs_on_the_wire.py",
              "-k", "throttle")),
    Mutation("plain-layout job spec drops event_ts_attribute", "featurepull/dynamo/plan.py",
             "layout_spec",
             (('"event_ts_attribute": layout.event_ts_attribute,\n', ""),),
             ("tests/tasks/test_jobs_on_the_wire.py", "-k", "plain")),
    Mutation("shards of a cancelled job not skipped", "featurepull/tasks/shards.py", "run_shard",
             (("if meta.terminal:", "if False:"),),
             ("tests/tasks/test_pipeline.py", "-k", "cancel")),
    Mutation("ConsistentRead always false", "featurepull/dynamo/reader.py", "read",
             (('"ConsistentRead": self.settings.consistent_reads', '"ConsistentRead": False'),),
             ("tests/test_cli_pull_flags.py", "-k", "consistent")),
)
# With the spec's key gone, the workers must fall back to a default rather than fail loudly:
# the silent regression, not a KeyError.
_PLAIN_FALLBACK = ('spec["event_ts_attribute"]', 'spec.get("event_ts_attribute", "event_ts")')


def function_span(text: str, name: str, offset: int = 0) -> tuple[int, int]:
    """Start and end offsets of the first ``def name`` (or ``class A`` then its ``def b``
    for ``A.b``) block in ``text``, searching from ``offset``."""
    if "." in name:
        owner, _, name = name.partition(".")
        start, end = function_span(text, owner, offset)
        inner_start, inner_end = function_span(text[:end], name, start)
        return inner_start, inner_end
    match = re.compile(rf"^(?P<indent>[ \t]*)(?:async def|def|class) {re.escape(name)}\b",
                       re.M).search(text, offset)
    if match is None:
        raise LookupError(f"no function {name}")
    indent = len(match["indent"])
    end = len(text)
    body = text.find("\n", match.end()) + 1  # from the line after the def
    for later in re.finditer(r"^(?P<indent>[ \t]*)\S", text[body:], re.M):
        if len(later["indent"]) <= indent and not later.group().lstrip().startswith(")"):
            end = body + later.start()
            break
    return match.start(), end


def apply(copy: Path, mutation: Mutation) -> None:
    """Edit the copy; LookupError when the code no longer has the text to mutate."""
    path = copy / mutation.path
    text = path.read_text()
    start, end = function_span(text, mutation.function)
    body = text[start:end]
    for old, new in mutation.edits:
        if old not in body:
            raise LookupError(f"{mutation.path}:{mutation.function} has no {old!r}")
        body = body.replace(old, new, 1)
    text = text[:start] + body + text[end:]
    if mutation.path.endswith("plan.py") and "event_ts_attribute" in mutation.name:
        text = text.replace(*_PLAIN_FALLBACK)
    path.write_text(text)


def copy_tree(target: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for name in files:
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def failed_tests(output: str) -> list[str]:
    return sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.M)))


def run(mutation: Mutation, number: int) -> tuple[str, list[str], float]:
    """('caught' | 'SURVIVED' | 'not applicable: ...'), failing tests, seconds."""
    missing = [t for t in mutation.tests if t.startswith("tests/") and
               not (ROOT / t.split("::")[0]).exists()]
    if missing:
        return f"no test here: {', '.join(missing)} is not in this branch", [], 0.0
    with tempfile.TemporaryDirectory(prefix=f"featurepull-mutation-{number}-") as folder:
        copy = Path(folder)
        copy_tree(copy)
        try:
            apply(copy, mutation)
        except LookupError as exc:
            return f"cannot apply: {exc}", [], 0.0
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pytest", *mutation.tests, "-q",
                               "-p", "no:cacheprovider", "-rfE", "--timeout", "240"],
                              cwd=copy, capture_output=True, text=True)
        seconds = time.monotonic() - started
    failed = failed_tests(proc.stdout)
    if proc.returncode == 0:
        return "SURVIVED", [], seconds
    if proc.returncode != 1 or not failed:  # usage error, collection error, no tests
        tail = "\n".join(proc.stdout.splitlines()[-5:])
        return f"pytest exit {proc.returncode} without a test failure:\n{tail}", [], seconds
    return "caught", failed, seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated mutation numbers (1-10)")
    args = parser.parse_args(argv)
    chosen = ({int(n) for n in args.only.split(",")} if args.only
              else set(range(1, len(MUTATIONS) + 1)))
    results = []
    for number, mutation in enumerate(MUTATIONS, 1):
        if number not in chosen:
            continue
        verdict, failed, seconds = run(mutation, number)
        results.append((number, mutation, verdict, failed))
        print(f"{number:>2}. {mutation.name}: {verdict} ({seconds:.0f}s)", flush=True)
        for test in failed:
            print(f"      failed: {test}", flush=True)
    print("\n| # | mutation | caught? | failing tests |\n|---|---|---|---|")
    for number, mutation, verdict, failed in results:
        tests = ", ".join(f"`{t}`" for t in failed) or "—"
        print(f"| {number} | {mutation.name} | {verdict.splitlines()[0]} | {tests} |")
    return 0 if all(verdict == "caught" for _, _, verdict, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
