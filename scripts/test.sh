#!/usr/bin/env bash
# The test suite, exactly as CI runs it: lint, types, then pytest against real services
# (a private redis-server, moto's DynamoDB/S3 server) that the tests start themselves.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh" test
cd "$root"
.venv/bin/ruff check featurepull tests scripts
.venv/bin/mypy featurepull
# Two test processes (pytest-xdist), each with its own services; a file's tests stay in one
# process, so its module fixtures (fleets, endpoints) start once. `-n 0` runs in one process.
exec .venv/bin/pytest -n 2 --dist loadfile "$@"
