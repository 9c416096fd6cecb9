"""The checks made on a job request before anything is read (featurepull.tasks.requests),
called directly: their exact refusals, and what passes. The same checks through the CLI and
the workers are in test_submit.py and tests/hardening/test_input_limits.py."""

from __future__ import annotations

import gc
from decimal import Decimal
from typing import Any

import pytest

from featurepull.config import ConfigError, Settings
from featurepull.tasks import requests
from featurepull.tasks.requests import (
    InvalidJobRequest,
    JobRequest,
    OutputRequired,
    RequestTooLarge,
    check_notify,
    check_request_size,
    check_rows_kept,
    job_settings,
    parse_job_request,
)

REQUEST = {"table": "drivers", "features": ["conv_rate"], "entities": "/data/ids.parquet"}


def settings(**jobs: Any) -> Settings:
    return Settings(jobs=jobs)


def test_parse_job_request_takes_a_mapping() -> None:
    parsed = parse_job_request(REQUEST | {"output": "/out/f.parquet"})
    assert (parsed.table, parsed.features, parsed.entities, parsed.output) == (
        "drivers", ["conv_rate"], "/data/ids.parquet", "/out/f.parquet")
    assert (parsed.scorer, parsed.with_features) == (None, False)


@pytest.mark.parametrize(("request_", "kind"), [([REQUEST], "list"), ("ids.csv", "str")])
def test_parse_job_request_refuses_what_is_not_an_object(request_: Any, kind: str) -> None:
    with pytest.raises(InvalidJobRequest) as caught:
        parse_job_request(request_)
    assert str(caught.value) == (
        f"the featurepull.submit_job request is a {kind}, not a JSON object; send "
        '{"table": ..., "features": [...], "entities": ...}')


def test_parse_job_request_names_the_bad_fields_and_where_the_api_is() -> None:
    with pytest.raises(InvalidJobRequest) as caught:
        parse_job_request({"table": "drivers", "features": ["conv_rate"], "scorer": "a b"})
    assert str(caught.value) == (
        "invalid featurepull.submit_job request (see the task API in docs/fleet.md):\n"
        "  entities: required\n"
        "  scorer='a b': String should match pattern '^[A-Za-z0-9_.-]+$'")


def test_with_features_needs_a_scorer() -> None:
    with pytest.raises(ValueError, match="with_features"):
        JobRequest(**REQUEST, with_features=True)
    assert JobRequest(**REQUEST, scorer="churn", with_features=True).with_features


def test_notify_on_featurepulls_own_queue_is_refused() -> None:
    ours = settings(queue="fp-jobs")
    check_notify(JobRequest(**REQUEST), ours)
    check_notify(JobRequest(**REQUEST, notify={"task": "app.done"}), ours)
    with pytest.raises(ConfigError) as caught:
        check_notify(JobRequest(**REQUEST, notify={"task": "app.done", "queue": "fp-jobs"}),
                     ours)
    assert str(caught.value) == (
        "notify.queue 'fp-jobs' is featurepull's own job queue; name the queue your app's "
        "worker consumes (Celery's default is 'celery')")


def test_job_settings_put_the_jobs_choices_on_the_workers() -> None:
    worker = Settings(project="worker_project",
                      dynamodb={"region": "eu-west-1", "batch_size": 50, "max_read_workers": 3})
    chosen = job_settings(worker, JobRequest(**REQUEST, project="job_project",
                                             dynamodb={"batch_size": 20}))
    assert (chosen.project, chosen.dynamodb.batch_size, chosen.dynamodb.region,
            chosen.dynamodb.max_read_workers) == ("job_project", 20, "eu-west-1", 3)
    same = job_settings(worker, JobRequest(**REQUEST))
    assert (same.project, same.dynamodb.batch_size) == ("worker_project", 50)


def test_job_settings_are_built_once_per_process_for_what_they_are_built_from(
        monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[dict[str, Any]] = []
    real_init = Settings.__init__

    def counted(self: Settings, **values: Any) -> None:
        built.append(values)
        real_init(self, **values)

    worker = Settings(dynamodb={"region": "eu-west-1", "batch_size": 50})
    other = Settings(dynamodb={"region": "eu-west-2", "batch_size": 50})
    job = JobRequest(**REQUEST, project="once_project", dynamodb={"batch_size": 21})
    monkeypatch.setattr(Settings, "__init__", counted)
    first = job_settings(worker, job)
    again = job_settings(worker, JobRequest(**REQUEST, project="once_project",
                                            dynamodb={"batch_size": 21}))
    assert len(built) == 1 and again == first  # a shard after the first builds none
    reordered = {"max_read_workers": 4, "batch_size": 21}
    job_settings(worker, JobRequest(**REQUEST, project="once_project", dynamodb=reordered))
    job_settings(worker, JobRequest(**REQUEST, project="once_project",
                                    dynamodb=dict(reversed(reordered.items()))))
    assert len(built) == 2  # the same choices in another order: the same settings
    budget = {"max_rcu_per_s": Decimal("12.5")}  # a Python caller's value JSON cannot hold
    budgeted = job_settings(worker, JobRequest(**REQUEST, dynamodb=budget))
    assert budgeted.dynamodb.max_rcu_per_s == 12.5
    again.dynamodb.batch_size = 7  # each caller has a copy of its own
    assert job_settings(worker, job).dynamodb.batch_size == 21 and len(built) == 3
    # What they are built from, each in turn: another job's choices, the worker's settings
    another = JobRequest(**REQUEST, project="once_project", dynamodb={"batch_size": 22})
    assert job_settings(worker, another).dynamodb.batch_size == 22
    assert job_settings(other, job).dynamodb.region == "eu-west-2"
    assert len(built) == 5
    # and the environment, which Settings() reads: a variable it refuses is refused again
    monkeypatch.setenv("FEATUREPULL_DYNAMODB__NO_SUCH_SETTING", "1")
    with pytest.raises(ValueError, match="no_such_setting"):
        job_settings(worker, job)


def test_the_worker_settings_are_serialized_once_for_every_job_settings_built_from_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    dumped: list[Settings] = []
    real_dump = Settings.model_dump_json

    def counted(self: Settings, **options: Any) -> str:
        dumped.append(self)
        return real_dump(self, **options)

    worker = Settings(dynamodb={"region": "eu-west-1"})
    monkeypatch.setattr(Settings, "model_dump_json", counted)
    for batch in (21, 22, 21):
        job = JobRequest(**REQUEST, dynamodb={"batch_size": batch})
        assert job_settings(worker, job).dynamodb.batch_size == batch
    assert dumped == [worker]
    # A copy is another object: serialized once too, with what it holds, each kept apart.
    other = worker.model_copy(update={"project": "copied"})
    assert job_settings(other, JobRequest(**REQUEST)).project == "copied"
    job_settings(worker, JobRequest(**REQUEST))
    job_settings(other, JobRequest(**REQUEST))
    assert dumped == [worker, other]
    # What was kept for a settings object goes with it.
    gc.collect()  # settings of earlier tests, unreachable, in cycles
    kept = len(requests._settings_json)
    del other, dumped[1]
    gc.collect()
    assert len(requests._settings_json) == kept - 1


def test_rows_kept_in_redis_are_limited_without_an_output() -> None:
    limited = settings(max_entities_without_output=1_000)
    check_rows_kept(JobRequest(**REQUEST), 1_000, limited)
    check_rows_kept(JobRequest(**REQUEST, output="/out/f.parquet"), 5_000, limited)
    with pytest.raises(OutputRequired) as caught:
        check_rows_kept(JobRequest(**REQUEST), 1_001, limited)
    assert str(caught.value) == (
        "this job has 1,001 entities and no output, so its rows would be kept in Redis; jobs "
        "without an output are limited to 1,000 entities (jobs.max_entities_without_output). "
        "Give an output: --output FILE (.parquet, .csv, .jsonl) or --output DIR/ (a Parquet "
        "dataset; a path or s3:// prefix ending in /)")


def test_request_size_counts_json_bytes_and_names_the_largest_field() -> None:
    request = REQUEST | {"features": ["é" * 40]}
    size = len('{"table": "drivers", "features": ["' + "\\u00e9" * 40
               + '"], "entities": "/data/ids.parquet"}')
    check_request_size(request, size)
    with pytest.raises(RequestTooLarge) as caught:
        check_request_size(request, size - 1)
    assert str(caught.value) == (
        f"the job request is {size:,} bytes of JSON (largest field: 'features'); this "
        f"deployment accepts at most {size - 1:,} (jobs.max_request_bytes). Entities go by "
        "reference (a path, s3:// or redis-key:), never inline; split a long feature list "
        "over several jobs, or raise the limit")


def test_request_size_of_values_json_cannot_hold_and_of_an_empty_request() -> None:
    with pytest.raises(RequestTooLarge, match=r"^the job request is 2 bytes of JSON; "):
        check_request_size({}, 1)
    dated = {"entities": object()}
    with pytest.raises(RequestTooLarge, match=r"\(largest field: 'entities'\)"):
        check_request_size(dated, 10)
