"""A scoring app's sender, run as its own process: it never imports featurepull. It sends
each ``featurepull.submit_job`` request read from stdin (a JSON list) by name, through the
Celery app of ``tests.ops.notify_receiver``, and prints one JSON outcome per request:
``{"job_id": ...}`` when accepted, ``{"error_type", "error"}`` when the task failed.

Environment: ``RECEIVER_REDIS_URL`` (the broker and results), ``FEATUREPULL_QUEUE`` (the
featurepull workers' queue).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from tests.ops.notify_receiver import app


def send(request: dict[str, Any], queue: str) -> dict[str, Any]:
    result = app.send_task("featurepull.submit_job", args=[request], queue=queue)
    try:
        answer = result.get(timeout=60, propagate=True)
    except Exception as exc:  # the task's failure, rebuilt by Celery
        return {"error_type": type(exc).__name__, "error": str(exc)}
    return {"job_id": answer["job_id"]}


def main() -> None:
    imported = any(name.split(".")[0] == "featurepull" for name in sys.modules)
    requests = json.load(sys.stdin)
    outcomes = [send(request, os.environ["FEATUREPULL_QUEUE"]) for request in requests]
    print(json.dumps({"featurepull_imported_before_sending": imported, "outcomes": outcomes}))


if __name__ == "__main__":
    main()
