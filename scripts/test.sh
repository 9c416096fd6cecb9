#!/usr/bin/env bash
# The test suite, exactly as CI runs it: lint, types, then pytest against real services
# (a private redis-server, moto's DynamoDB/S3 server) that the tests start themselves.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh" test
cd "$root"
.venv/bin/ruff check featurepull tests scripts
.venv/bin/mypy featurepull
exec .venv/bin/pytest "$@"
