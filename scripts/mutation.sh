#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut (not part of CI; minutes per module).
#
#   bash scripts/mutation.sh                          # every module in [tool.mutmut] only_mutate
#   bash scripts/mutation.sh featurepull.tasks.store featurepull.dynamo.layouts
#   MUTATION_JOBS=2 bash scripts/mutation.sh ...      # parallel mutants (default 1: shared box)
#   MUTATION_RECHECK=1 bash scripts/mutation.sh ...   # run last time's survivors again
#   MUTATION_ONLY='featurepull.cli.x_request_options*' bash scripts/mutation.sh featurepull.cli
#                                                     # only the mutants matching these globs
#
# Each module runs in its own folder, .mutation/MODULE (git-ignored), against its own fast
# tests ([tool.featurepull.mutation-tests] in pyproject.toml; the [tool.mutmut] selection when
# not listed). mutmut copies the code to .mutation/MODULE/mutants/, maps each function to the
# tests that run it in this process, then runs those tests against every mutant. Prints the
# killed share per module and the mutants not killed; to see one:
#   (cd .mutation/MODULE && ../../.venv/bin/mutmut show NAME)
# A rerun only redoes what changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh" "test,mutation"
cd "$root"
# One redis-server, moto and fast endpoint for every mutant's pytest session, instead of
# starting them for each (tests/shared_services.py): only with one mutant at a time, as
# tests take differences of the endpoint's counters.
if [ "${MUTATION_JOBS:-1}" = 1 ]; then
  mkdir -p .mutation
  export MUTATION_SERVICES="$root/.mutation/services-$$.json"
  .venv/bin/python -m tests.shared_services "$MUTATION_SERVICES" &
  services=$!
  trap 'kill "$services" 2>/dev/null || true; wait "$services" 2>/dev/null || true' EXIT
  until [ -f "$MUTATION_SERVICES" ]; do
    kill -0 "$services" 2>/dev/null || { echo "mutation.sh: the services did not start" >&2; exit 1; }
    sleep 0.2
  done
fi
modules=("$@")
if [ ${#modules[@]} -eq 0 ]; then
  mapfile -t modules < <(.venv/bin/python -c '
import tomllib
for path in tomllib.load(open("pyproject.toml", "rb"))["tool"]["mutmut"]["only_mutate"]:
    print(path.removesuffix(".py").replace("/", "."))')
fi
for module in "${modules[@]}"; do
  work=".mutation/$module"
  mkdir -p "$work"
  ln -sfn ../../featurepull "$work/featurepull"
  ln -sfn ../../tests "$work/tests"
  ln -sfn ../../docs "$work/docs"  # tests check the pages that texts name
  # The project's pyproject.toml (pytest options, mutmut settings) with only this module to
  # mutate and its own test selection.
  .venv/bin/python - "$module" "$work/pyproject.toml" <<'PY'
import json
import re
import sys
import tomllib
from pathlib import Path

module, target = sys.argv[1], Path(sys.argv[2])
text = Path("pyproject.toml").read_text()
config = tomllib.loads(text)["tool"]
tests = config.get("featurepull", {}).get("mutation-tests", {}).get(
    module, config["mutmut"]["pytest_add_cli_args_test_selection"])
path = module.replace(".", "/") + ".py"
if not Path(path).is_file():
    sys.exit(f"mutation.sh: no module {module} ({path})")
for name, value in (("only_mutate", [path]), ("pytest_add_cli_args_test_selection", tests)):
    text, found = re.subn(rf"^{name} = \[.*?\]$", f"{name} = {json.dumps(value)}", text,
                          count=1, flags=re.S | re.M)
    assert found == 1, name
if not target.is_file() or target.read_text() != text:
    target.write_text(text)
PY
  # A finished mutant keeps its verdict across runs. MUTATION_RECHECK=1 runs the ones not
  # killed last time again (after adding tests for them).
  names=()
  if [ "${MUTATION_RECHECK:-0}" = 1 ] && [ -f "$work/results.txt" ]; then
    mapfile -t names < <(grep -v ': killed$\|: timeout$' "$work/results.txt" \
                         | sed -n 's/^ *\([^ ]*__mutmut_[0-9]*\): .*/\1/p')
  fi
  if [ -n "${MUTATION_ONLY:-}" ]; then
    read -r -a names <<<"$MUTATION_ONLY"
  fi
  echo "mutation.sh: $module${names:+ (rechecking ${#names[@]} mutants)}" >&2
  (cd "$work" && "$root/.venv/bin/mutmut" run --max-children "${MUTATION_JOBS:-1}" \
      ${names[@]+"${names[@]}"} >mutmut.log 2>&1) || {
    tail -30 "$work/mutmut.log" >&2
    echo "mutation.sh: mutmut failed on $module; its output is in $work/mutmut.log" >&2
    exit 1
  }
  (cd "$work" && "$root/.venv/bin/mutmut" results --all true >results.txt 2>&1)
done
.venv/bin/python - "${modules[@]}" <<'PY'
"""Killed share per module, and the mutants not killed, from `mutmut results --all true`."""
import collections
import sys
from pathlib import Path

counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
survivors: list[str] = []
for module in sys.argv[1:]:
    for line in Path(f".mutation/{module}/results.txt").read_text().splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if not sep or "__mutmut_" not in name:
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
print(f"\nnot killed ({len(survivors)}):")
print("\n".join(survivors))
PY
