#!/usr/bin/env bash
# The demo on embedded services: creates .venv if needed, then `featurepull demo`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh" local
cd "$root"
exec .venv/bin/featurepull demo "$@"
