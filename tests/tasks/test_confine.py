"""The bounds of what a job may name (featurepull.tasks.confine), on real files and
symlinks: prefix matching without confusion, ``..`` and symlink escapes, outputs that do not
exist yet, endpoint spellings, the Redis key prefix, the worker's own schedules, the start
warning and the settings' validation. Through real workers: tests/hardening/
test_confine_workers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurepull.config import ConfigError, Settings
from featurepull.config.errors import settings_error
from featurepull.tasks.confine import Bounds, RequestOutOfBounds, start_warning


def _settings(schedules: list[dict[str, object]] | None = None, **jobs: object) -> Settings:
    return Settings(dynamodb={"endpoint_url": "http://127.0.0.1:8000", "region": "us-east-1"},
                    jobs=jobs, schedules=schedules or [])


@pytest.fixture
def places(tmp_path: Path) -> Path:
    root = tmp_path.resolve()
    for name in ("data", "database", "elsewhere"):
        (root / name).mkdir()
    (root / "data" / "out").symlink_to(root / "elsewhere", target_is_directory=True)
    (root / "data" / "in").symlink_to(root / "data" / "sub", target_is_directory=True)
    (root / "data" / "sub").mkdir()
    return root


def test_local_prefixes_resolve_dots_and_symlinks(places: Path) -> None:
    bounds = Bounds.for_messages(_settings(allowed_outputs=[str(places / "data")]))
    bounds.check_output(str(places / "data" / "new.parquet"))  # does not exist yet: fine
    bounds.check_output(str(places / "data" / "in" / "x.csv"))  # a symlink that stays inside
    bounds.check_output(str(places / "data") + "/")  # a dataset in the directory itself
    for escape in (places / "database" / "x.parquet",  # a sibling sharing the prefix
                   Path(f"{places}/data/../elsewhere/x.parquet"),  # ..
                   places / "data" / "out" / "x.parquet",  # a symlinked directory
                   places / "data" / "out" / "new" / "deeper.parquet"):  # and below it
        with pytest.raises(RequestOutOfBounds, match=r"jobs\.allowed_outputs \(env "
                           r"FEATUREPULL_JOBS__ALLOWED_OUTPUTS\)") as refused:
            bounds.check_output(str(escape))
        assert refused.value.setting == "allowed_outputs"


def test_a_symlinked_allowed_directory_admits_what_is_under_its_target(places: Path) -> None:
    bounds = Bounds.for_messages(_settings(allowed_inputs=[str(places / "data" / "out")]))
    bounds.check_entities(str(places / "elsewhere" / "e.csv"))
    with pytest.raises(RequestOutOfBounds, match="allowed_inputs"):
        bounds.check_entities(str(places / "data" / "e.csv"))


def test_s3_prefixes_without_confusion() -> None:
    bounds = Bounds.for_messages(_settings(allowed_inputs=["s3://b/data"],
                                           allowed_outputs=["s3://b/data/", "s3://whole"]))
    bounds.check_entities("s3://b/data/e.parquet")
    bounds.check_output("s3://b/data/run/")
    bounds.check_output("s3://whole/any/key.parquet")
    for refused in ("s3://b/database/e.parquet", "s3://b/data", "s3://bb/data/e.parquet",
                    "s3://b/data/../secret/e.parquet", "s3://b/data/./e.parquet"):
        with pytest.raises(RequestOutOfBounds):
            bounds.check_entities(refused)
    with pytest.raises(RequestOutOfBounds):
        bounds.check_output("s3://wholesale/x.parquet")
    with pytest.raises(RequestOutOfBounds, match="allowed_inputs"):
        bounds.check_entities("/tmp/e.csv")  # a local path against an S3-only list


def test_unset_lists_do_not_limit_and_empty_ones_allow_nothing(places: Path) -> None:
    open_bounds = Bounds.for_messages(_settings())
    open_bounds.check_message("/etc/passwd", "/etc/out.parquet",
                              {"endpoint_url": "http://169.254.169.254"})
    closed = Bounds.for_messages(_settings(allowed_outputs=[], allowed_endpoints=[]))
    closed.check_output(None)  # rows left in Redis
    with pytest.raises(RequestOutOfBounds, match="allowed: none"):
        closed.check_output(str(places / "data" / "x.parquet"))
    closed.check_endpoint("http://127.0.0.1:8000/")  # the worker's own, spelt differently
    with pytest.raises(RequestOutOfBounds, match="allowed_endpoints"):
        closed.check_endpoint("http://169.254.169.254/latest")


def test_endpoint_spellings() -> None:
    bounds = Bounds.for_messages(_settings(allowed_endpoints=["https://DDB.example.com"]))
    for same in ("https://ddb.example.com", "https://ddb.example.com:443/",
                 "http://127.0.0.1:8000"):
        bounds.check_endpoint(same)
    for other in ("http://ddb.example.com", "https://ddb.example.com:8443",
                  "https://ddb.example.com.evil.net", "https://ddb.example.com/x",
                  "http://127.0.0.1:notaport", 12):
        with pytest.raises(RequestOutOfBounds):
            bounds.check_endpoint(other)


def test_redis_key_prefix() -> None:
    bounds = Bounds.for_messages(_settings())
    bounds.check_entities("redis-key:featurepull:input:today")
    for key in ("redis-key:featurepull:job:abc:rows:0", "redis-key:secrets",
                "redis-key:featurepull:input"):
        with pytest.raises(RequestOutOfBounds, match=r"featurepull:input:\*.*"
                           r"jobs\.entity_key_prefix"):
            bounds.check_entities(key)
    Bounds.for_messages(_settings(entity_key_prefix="")).check_entities("redis-key:any")


def test_the_workers_own_schedules_are_allowed_for_jobs_not_for_messages(
        places: Path) -> None:
    settings = _settings(
        [{"name": "nightly", "every_s": 60, "table": "t", "features": ["f"],
          "entities": "/x.csv", "output": f"{places}/database/{{date}}/drivers.parquet",
          "dynamodb": {"endpoint_url": "http://ddb.internal:8000"}}],
        allowed_outputs=[str(places / "data")], allowed_endpoints=[])
    nightly = f"{places}/database/2026-01-01/drivers.parquet"
    Bounds.for_jobs(settings).check_job(nightly, {"endpoint_url": "http://ddb.internal:8000"})
    with pytest.raises(RequestOutOfBounds):
        Bounds.for_jobs(settings).check_output(str(places / "elsewhere" / "x.parquet"))
    with pytest.raises(RequestOutOfBounds):
        Bounds.for_messages(settings).check_output(nightly)
    with pytest.raises(RequestOutOfBounds):
        Bounds.for_messages(settings).check_endpoint("http://ddb.internal:8000")


def test_start_warning_names_each_unset_setting() -> None:
    warning = start_warning(_settings(allowed_inputs=["/data"]))
    assert warning is not None
    assert "write its output to any path or S3 bucket" in warning
    assert "jobs.allowed_outputs (env FEATUREPULL_JOBS__ALLOWED_OUTPUTS)" in warning
    assert "jobs.allowed_endpoints" in warning and "allowed_inputs" not in warning
    assert start_warning(_settings(allowed_inputs=[], allowed_outputs=[],
                                   allowed_endpoints=[])) is None


@pytest.mark.parametrize(("jobs", "problem"), [
    ({"allowed_outputs": ["data/out"]}, "neither an absolute directory nor an s3://"),
    ({"allowed_inputs": ["s3:///x"]}, "names no bucket"),
    ({"allowed_endpoints": ["ddb.internal:8000"]}, "is not an http:// or https:// URL"),
])
def test_settings_refuse_malformed_entries(jobs: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        try:
            _settings(**jobs)
        except ValueError as exc:
            raise settings_error(exc) from None
