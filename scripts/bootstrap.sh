#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install featurepull with the given extras, once per
# change of pyproject.toml. Sourced by the other scripts; prints nothing when up to date.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-local}"
venv="$root/.venv"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c \
        'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      python="$candidate"; break
    fi
  done
fi
if [ -z "$python" ]; then
  echo "featurepull needs Python 3.11 or newer on PATH (or set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtualenv $venv with $python" >&2
  "$python" -m venv "$venv"
fi
stamp="$venv/.featurepull-$extras"
want="$(cat "$root/pyproject.toml" | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "installing featurepull[$extras] into $venv (first run takes a minute)" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[$extras]" >&2
  echo "$want" > "$stamp"
fi
