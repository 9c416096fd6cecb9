"""``featurepull pull`` with Feast references, compared with Feast's own
``get_online_features`` on a repo Feast applied and wrote: several views on different
entities (one keyed by two), unknown entities, repeats, shuffled rows; names, TTL, feature
services, and every error naming its fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from feast import FeatureView, Field
from feast.errors import FeatureNameCollisionError
from feast.types import Int64

from featurepull.cli import main
from featurepull.config import S3Settings, Settings
from featurepull.dynamo.feast_registry import RegistryError, load_registry, registry_location
from featurepull.tasks.confine import Bounds, RequestOutOfBounds
from tests.conftest import REGION
from tests.feast_registry.conftest import DRIVERS, FeastRepo, write_yaml

TWO_VIEWS = ["driver_hourly_stats:conv_rate", "customer_profile:tier",
             "driver_customer:rides", "driver_hourly_stats:trips"]


def pull(repo: FeastRepo, out: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [
        "pull", "--feature-store-yaml", str(repo.yaml), "--entities", str(repo.entities),
        "--output", str(out), "--json", *args], catch_exceptions=False)


def assert_same_as_feast(got: dict[str, list[Any]], expected: dict[str, list[Any]]) -> None:
    for name, values in expected.items():
        assert got[name] == values, name


def test_several_views_read_as_feast_reads_them(feast_repo: FeastRepo, tmp_path: Path) -> None:
    out = tmp_path / "features.parquet"
    result = pull(feast_repo, out, "--features", ",".join(TWO_VIEWS))
    assert result.exit_code == 0, result.output
    got = pq.read_table(out).to_pydict()
    assert list(got) == ["customer_id", "driver_id", "driver_hourly_stats__event_timestamp",
                         "customer_profile__event_timestamp", "driver_customer__event_timestamp",
                         "conv_rate", "tier", "rides", "trips"]
    expected = feast_repo.online(TWO_VIEWS)
    assert_same_as_feast(got, expected)
    assert got["driver_id"] == [row["driver_id"] for row in feast_repo.rows]
    # The answer has unknown drivers, unknown customers and unknown pairs in it.
    for name in ("conv_rate", "tier", "rides"):
        assert 0 < expected[name].count(None) < len(feast_repo.rows)
    stamps = got["driver_hourly_stats__event_timestamp"]
    assert [s is None for s in stamps] == [v is None for v in expected["conv_rate"]]
    summary = json.loads(result.output.splitlines()[-1])
    assert summary["keys"] == len(feast_repo.rows)
    # One read per view per unique key: the keys each view needed, summed.
    unique = (len({r["driver_id"] for r in feast_repo.rows})
              + len({r["customer_id"] for r in feast_repo.rows})
              + len({(r["driver_id"], r["customer_id"]) for r in feast_repo.rows}))
    assert summary["unique_keys"] == unique


def test_one_view_keeps_event_timestamp(feast_repo: FeastRepo, tmp_path: Path) -> None:
    out = tmp_path / "one.csv"
    result = pull(feast_repo, out, "--features", "customer_profile:tier,customer_profile:trips")
    assert result.exit_code == 0, result.output
    header = out.read_text().splitlines()[0]
    assert header == "customer_id,event_timestamp,tier,trips"
    lines = out.read_text().splitlines()[1:]
    expected = feast_repo.online(["customer_profile:tier", "customer_profile:trips"])
    assert [line.split(",")[2] or None for line in lines] == expected["tier"]
    # A view without a TTL, keyed by two join keys (its rows go out as read).
    out = tmp_path / "pair.parquet"
    result = pull(feast_repo, out, "--features", "driver_customer:rides")
    assert result.exit_code == 0, result.output
    got = pq.read_table(out).to_pydict()
    assert list(got) == ["customer_id", "driver_id", "event_timestamp", "rides"]
    assert_same_as_feast(got, feast_repo.online(["driver_customer:rides"]))
    assert 0 < got["rides"].count(None) < len(got["rides"])


def test_full_feature_names_and_the_clash_without_them(feast_repo: FeastRepo,
                                                       tmp_path: Path) -> None:
    refs = ["driver_hourly_stats:trips", "customer_profile:trips"]
    with pytest.raises(FeatureNameCollisionError):
        feast_repo.online(refs)
    refused = pull(feast_repo, tmp_path / "clash.parquet", "--features", ",".join(refs))
    assert refused.exit_code == 2
    assert "'trips' come from more than one feature view" in refused.output
    assert "--full-feature-names" in refused.output
    assert not (tmp_path / "clash.parquet").exists()
    out = tmp_path / "full.parquet"
    result = pull(feast_repo, out, "--features", ",".join(refs), "--full-feature-names")
    assert result.exit_code == 0, result.output
    got = pq.read_table(out).to_pydict()
    expected = feast_repo.online(refs, full_feature_names=True)
    assert "driver_hourly_stats__trips" in got and "customer_profile__trips" in got
    assert_same_as_feast(got, expected)


def test_feature_service(feast_repo: FeastRepo, tmp_path: Path) -> None:
    out = tmp_path / "service.parquet"
    result = pull(feast_repo, out, "--feature-service", "scoring")
    assert result.exit_code == 0, result.output
    got = pq.read_table(out).to_pydict()
    assert list(got)[-2:] == ["conv_rate", "tier"]
    assert_same_as_feast(got, feast_repo.online("scoring"))


def test_respect_ttl_nulls_stale_views_and_both_count_them(feast_repo: FeastRepo,
                                                           tmp_path: Path) -> None:
    refs = ["driver_hourly_stats:conv_rate", "customer_profile:tier"]
    # Every third driver's row is 5 hours old; driver_hourly_stats has a 2 hour TTL.
    stale = [r["driver_id"] < DRIVERS and r["driver_id"] % 3 == 0 for r in feast_repo.rows]
    expected = feast_repo.online(refs)
    plain = pull(feast_repo, tmp_path / "plain.parquet", "--features", ",".join(refs))
    assert json.loads(plain.output.splitlines()[-1])["stale"] == sum(stale)
    # Feast returns stale values as present (feast#6821); so does featurepull by default.
    assert_same_as_feast(pq.read_table(tmp_path / "plain.parquet").to_pydict(), expected)
    out = tmp_path / "ttl.parquet"
    result = pull(feast_repo, out, "--features", ",".join(refs), "--respect-ttl")
    assert json.loads(result.output.splitlines()[-1])["stale"] == sum(stale) > 0
    text = CliRunner().invoke(main, [
        "pull", "--feature-store-yaml", str(feast_repo.yaml), "--entities",
        str(feast_repo.entities), "--output", str(tmp_path / "ttl.csv"), "--features",
        ",".join(refs)], catch_exceptions=False).output
    assert f" stale={sum(stale)}" in text
    got = pq.read_table(out).to_pydict()
    assert got["conv_rate"] == [None if old else value
                                for old, value in zip(stale, expected["conv_rate"], strict=True)]
    assert got["tier"] == expected["tier"]


@pytest.mark.parametrize(("args", "message"), [
    (["--features", "driver_hourly_stat:conv_rate"],
     "no feature view 'driver_hourly_stat' in project"),
    (["--features", "driver_hourly_stats:conv"],
     "has no feature 'conv'; its features are conv_rate, trips"),
    (["--features", "driver_hourly_stats:conv_rate,tier"],
     "'tier' is not a Feast reference view:feature"),
    (["--features", "driver_hourly_stats:conv_rate", "--table", "x"],
     "leave out table, join_keys"),
    (["--feature-service", "nope"], "no feature service 'nope'"),
    (["--feature-service", "scoring", "--features", "customer_profile:tier"],
     "name either features (view:feature,...) or a feature_service, not both"),
    (["--features", "conv_rate", "--table", "driver_hourly_stats", "--respect-ttl"],
     "full_feature_names and respect_ttl apply to Feast references"),
])
def test_bad_references_name_the_fix(feast_repo: FeastRepo, tmp_path: Path, args: list[str],
                                     message: str) -> None:
    result = pull(feast_repo, tmp_path / "out.parquet", *args)
    assert result.exit_code == 2
    assert message in result.output
    if "no feature view" in message:
        assert "customer_profile, driver_customer, driver_hourly_stats" in result.output
    assert not (tmp_path / "out.parquet").exists()


def test_entity_file_without_a_views_join_key(feast_repo: FeastRepo, tmp_path: Path) -> None:
    entities = tmp_path / "drivers.csv"
    entities.write_text("driver_id\n1\n2\n")
    result = CliRunner().invoke(main, [
        "pull", "--feature-store-yaml", str(feast_repo.yaml), "--entities", str(entities),
        "--output", str(tmp_path / "o.parquet"), "--features",
        "driver_hourly_stats:conv_rate,customer_profile:tier"])
    assert result.exit_code == 2
    assert "no column 'customer_id', the join key of feature view 'customer_profile'" \
        in result.output


@pytest.mark.parametrize(("registry", "message"), [
    ("data/missing.db", "does not exist; run `feast apply`"),
    ("{registry_type: sql, path: 'postgresql://u@h/db'}", "registry is 'sql'"),
    ("gs://bucket/registry.db", "is not readable by featurepull"),
])
def test_registries_featurepull_cannot_read(feast_repo: FeastRepo, tmp_path: Path,
                                            registry: str, message: str) -> None:
    yaml = write_yaml(tmp_path / "repo", feast_repo.project, "http://unused", registry)
    result = CliRunner().invoke(main, [
        "pull", "--feature-store-yaml", str(yaml), "--entities", str(feast_repo.entities),
        "--output", str(tmp_path / "o.parquet"), "--features", "driver_hourly_stats:trips"])
    assert result.exit_code == 2
    assert message in result.output
    if "missing" not in registry:
        assert "a local registry file" in result.output and "s3://" in result.output


def test_a_changed_registry_is_read_again(feast_repo: FeastRepo) -> None:
    location = registry_location(str(feast_repo.yaml))
    before = load_registry(location, feast_repo.project)
    assert load_registry(location, feast_repo.project) is before  # cached while unchanged
    # A view without entities: featurepull cannot read it, and still reads the others.
    extra = FeatureView(name="extra_view", entities=[],
                        source=feast_repo.store.get_feature_view("driver_hourly_stats")
                        .batch_source, schema=[Field(name="n", dtype=Int64)])
    feast_repo.store.apply([extra])
    try:
        after = load_registry(location, feast_repo.project)
        assert after is not before
        assert "extra_view" in after.other_views and "extra_view" not in before.other_views
        with pytest.raises(RegistryError, match="'extra_view'"):
            after.view("extra_view")
        assert after.view("driver_hourly_stats") == before.view("driver_hourly_stats")
    finally:
        feast_repo.store.delete_feature_view("extra_view")


def test_references_without_a_registry(feast_repo: FeastRepo, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "pull", "--entities", str(feast_repo.entities), "--output", str(tmp_path / "o.csv"),
        "--features", "driver_hourly_stats:trips"])
    assert result.exit_code == 2
    assert "resolved in a Feast registry: pass --feature-store-yaml" in result.output


def test_an_s3_registry(feast_repo: FeastRepo, endpoint_url: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION)
    bucket = f"registry-{feast_repo.project.lower()}"
    s3.create_bucket(Bucket=bucket)
    local = registry_location(str(feast_repo.yaml))
    s3.put_object(Bucket=bucket, Key="r/registry.db", Body=Path(local).read_bytes())
    yaml = write_yaml(tmp_path / "s3repo", feast_repo.project, endpoint_url,
                      f"s3://{bucket}/r/registry.db")
    location = registry_location(str(yaml))
    registry = load_registry(location, feast_repo.project, S3Settings(endpoint_url=endpoint_url))
    assert registry.views["driver_customer"].join_keys == {"driver_id": "int64",
                                                           "customer_id": "string"}
    assert registry.views["driver_hourly_stats"].ttl_s == 7200


def test_a_job_message_reads_no_repo_outside_the_allowed_inputs(feast_repo: FeastRepo,
                                                                 tmp_path: Path) -> None:
    # The worker reads the yaml and the registry it names: both must be allowed inputs.
    inside = tmp_path / "allowed"
    yaml = write_yaml(inside, feast_repo.project, "http://unused",
                      registry_location(str(feast_repo.yaml)))  # the registry lies outside
    bounds = Bounds.for_messages(Settings(jobs={"allowed_inputs": [str(inside)]}))
    with pytest.raises(RequestOutOfBounds, match=r"the job's registry .*jobs\.allowed_inputs"):
        bounds.check_feast_repo(str(yaml))
    with pytest.raises(RequestOutOfBounds, match=r"the job's feature_store_yaml"):
        bounds.check_feast_repo(str(feast_repo.yaml))
    Bounds.for_messages(Settings(jobs={"allowed_inputs": [str(inside), str(feast_repo.path)]})
                        ).check_feast_repo(str(yaml))
