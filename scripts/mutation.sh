#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut (not part of CI; minutes to an hour).
#
#   bash scripts/mutation.sh                          # every module in [tool.mutmut] only_mutate
#   bash scripts/mutation.sh featurepull.dynamo.retry featurepull.dynamo.layouts
#   MUTATION_JOBS=2 bash scripts/mutation.sh ...      # parallel mutants (default 1: shared box)
#
# mutmut copies the code to mutants/, maps each function to the fast tests that run it (in
# this process: see [tool.mutmut] in pyproject.toml), then runs those tests against every
# mutant. Prints the killed share per module and the surviving mutants; `mutmut show NAME`
# prints one. Results stay in mutants/ (git-ignored); a rerun only redoes what changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh" "test,mutation"
cd "$root"
patterns=()
for module in "$@"; do
  patterns+=("${module}.*")
done
.venv/bin/mutmut run --max-children "${MUTATION_JOBS:-1}" "${patterns[@]}" >mutants.log 2>&1 || {
  tail -30 mutants.log >&2
  echo "mutation.sh: mutmut failed; its output is in mutants.log" >&2
  exit 1
}
.venv/bin/mutmut results --all true >mutants/results.txt 2>&1
.venv/bin/python - "$@" <<'PY'
"""Killed share per module, and the survivors, from `mutmut results --all true`."""
import collections
import sys
from pathlib import Path

wanted = sys.argv[1:]
counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
survivors: list[str] = []
for line in Path("mutants/results.txt").read_text().splitlines():
    name, sep, status = line.strip().rpartition(": ")
    if not sep or "__mutmut_" not in name:
        continue
    module = name.split(".x", 1)[0] if ".x" in name else name.rsplit(".", 1)[0]
    if wanted and not any(module == w or module.startswith(w + ".") for w in wanted):
        continue
    counts[module][status] += 1
    if status not in ("killed", "timeout", "segfault"):
        survivors.append(f"{status:>10}  {name}")
print(f"{'module':<36} {'mutants':>7} {'killed':>7} {'score':>6}  other")
for module, by_status in sorted(counts.items()):
    total = sum(by_status.values())
    killed = by_status["killed"] + by_status["timeout"] + by_status["segfault"]
    other = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())
                      if s not in ("killed", "timeout", "segfault"))
    print(f"{module:<36} {total:>7} {killed:>7} {killed / total:>6.0%}  {other}")
print(f"\nnot killed ({len(survivors)}); `mutmut show NAME` prints the change:")
print("\n".join(survivors))
PY
