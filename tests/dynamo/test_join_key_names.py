"""Non-ASCII join-key names in Feast's entity key serialization version 3: Feast packs the
name's length as its UTF-8 bytes in recent releases and as its characters in older ones,
so such a name needs ``join_key_name_length`` and is refused without it. Every id path
(``entity_id`` row by row, ``entity_ids`` and ``unique_entity_ids`` a column at a time,
including the fixed-width MurmurHash3 head of one int key) is checked on generated keys
against Feast's own ``serialize_entity_key`` + mmh3 ("bytes") and against hand-built bytes
("chars")."""

from __future__ import annotations

import json
import random
import struct
from typing import Any

import mmh3
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from featurepull.config import Settings
from featurepull.dynamo import FeastLayout
from featurepull.dynamo.errors import EntityKeyError
from featurepull.dynamo.feast_keys import EntityKeyEncoder
from featurepull.dynamo.plan import layout_from_spec, layout_spec
from featurepull.dynamo.views import KeyEncoding, ViewRead, ViewsPlan, ViewsReader

NAMES = ["driver_id", "fahrer_größe", "東京", "🚀x", "é", "a\u0301", "zz"]
KINDS: dict[str, tuple[str, list[Any]]] = {
    "int64": ("int64_val", [0, 1, -1, 2**63 - 1, -(2**63), 1003]),
    "int32": ("int32_val", [0, -(2**31), 2**31 - 1, 7]),
    "unix_timestamp": ("unix_timestamp_val", [0, 1_700_000_000, -5]),
    "string": ("string_val", ["", "a", "Montréal", "東京", "🚀"]),
    "bytes": ("bytes_val", [b"", b"\x00\xff", b"abc"]),
}
STRING = 2


def header(names: list[str], convention: str) -> bytes:
    """Version 3's key count and (type, name length, name) of each sorted name, by hand."""
    out = struct.pack("<I", len(names))
    for name in sorted(names):
        data = name.encode("utf8")
        size = len(data) if convention == "bytes" else len(name)
        out += struct.pack("<I", STRING) + struct.pack("<I", size) + data
    return out


def feast_serialized(types: dict[str, str], row: dict[str, Any]) -> bytes:
    key = EntityKey(join_keys=list(row),
                    entity_values=[Value(**{KINDS[types[n]][0]: v}) for n, v in row.items()])
    return serialize_entity_key(key, entity_key_serialization_version=3)


def expected_id(types: dict[str, str], row: dict[str, Any], convention: str) -> str:
    """Feast's id ("bytes"), or its value bytes after a hand-built "chars" header."""
    feast = feast_serialized(types, row)
    own = header(list(types), "bytes")
    assert feast.startswith(own)  # the hand-built header is Feast's, for "bytes"
    data = feast if convention == "bytes" else header(list(types), "chars") + feast[len(own):]
    return str(mmh3.hash_bytes(data).hex())


@pytest.mark.parametrize("convention", ["bytes", "chars"])
@pytest.mark.parametrize("seed", range(12))
def test_every_id_path_follows_the_chosen_name_length(convention: str, seed: int) -> None:
    rng = random.Random(seed)
    names = rng.sample(NAMES, rng.randint(1, 3))
    if seed % 4 == 0:  # always some non-ASCII name
        names = [*[n for n in names if n.isascii()][:2], "fahrer_größe"]
    types = {name: rng.choice(sorted(KINDS)) for name in names}
    if seed % 5 == 0:  # one int key: the fixed-width MurmurHash3 path
        types = {"fahrer_größe": rng.choice(["int64", "int32", "unix_timestamp"])}
    rows = [{n: rng.choice(KINDS[k][1]) for n, k in types.items()}
            for _ in range(rng.randint(1, 30))]
    encoder = EntityKeyEncoder(types, 3, convention)
    order = encoder.names
    expected = [expected_id(types, row, convention) for row in rows]
    assert [encoder.entity_id([row[n] for n in order]) for row in rows] == expected
    columns = [[row[n] for row in rows] for n in order]
    assert encoder.entity_ids(columns) == expected
    unique = encoder.unique_entity_ids(columns)
    if unique is not None:
        ids, indices = unique
        assert [ids[i] for i in indices.to_pylist()] == expected


@pytest.mark.parametrize("name", ["fahrer_größe", "東京", "é"])
def test_a_non_ascii_name_without_the_setting_is_refused(name: str) -> None:
    with pytest.raises(EntityKeyError) as caught:
        EntityKeyEncoder({"driver_id": "int64", name: "string"}, 3)
    message = str(caught.value)
    for part in (repr(name), "join_key_name_length", '"bytes"', '"chars"', "cannot tell"):
        assert part in message


def test_ascii_names_and_version_2_need_no_setting() -> None:
    row = {"driver_id": 5, "zone": "東京"}
    types = {"driver_id": "int64", "zone": "string"}
    assert EntityKeyEncoder(types, 3).entity_id([5, "東京"]) == expected_id(types, row, "bytes")
    assert EntityKeyEncoder(types, 3).entity_id([5, "東京"]) == expected_id(types, row, "chars")
    key = EntityKey(join_keys=["fahrer_größe"], entity_values=[Value(int64_val=5)])
    feast = serialize_entity_key(key, entity_key_serialization_version=2)
    assert EntityKeyEncoder({"fahrer_größe": "int64"}, 2).serialize([5]) == feast


def test_an_unknown_convention_is_refused() -> None:
    with pytest.raises(EntityKeyError, match="join_key_name_length 'utf8' is not one of"):
        EntityKeyEncoder({"driver_id": "int64"}, 3, "utf8")


def test_a_jobs_layout_spec_carries_the_submitters_choice() -> None:
    """Shards rebuild the layout from the job's spec: the submitter's join_key_name_length
    wins over the worker's settings; a spec stored before it existed takes the worker's."""
    types = {"fahrer_größe": "int64"}
    row = {"fahrer_größe": 7}
    spec = layout_spec(FeastLayout(types, 3, name_length="chars"))
    worker = Settings(join_key_name_length="bytes")
    rebuilt = layout_from_spec(json.loads(json.dumps(spec)), worker)
    assert isinstance(rebuilt, FeastLayout)
    assert rebuilt.encoder.entity_id([7]) == expected_id(types, row, "chars")
    del spec["name_length"]
    older = layout_from_spec(spec, worker)
    assert isinstance(older, FeastLayout)
    assert older.encoder.entity_id([7]) == expected_id(types, row, "bytes")
    with pytest.raises(EntityKeyError, match="fahrer_größe"):
        layout_from_spec(spec, Settings(join_key_name_length=None))


def v2_id(name: str, value: int) -> str:
    """Version 2's id of one int64 key: no key count, no name lengths."""
    data = struct.pack("<I", STRING) + name.encode("utf8")
    return str(mmh3.hash_bytes(data + struct.pack("<IIq", 4, 8, value)).hex())


def test_a_jobs_layout_spec_carries_the_submitters_serialization_version() -> None:
    """A worker set to version 2 still builds the version 3 ids its submitter checked; a spec
    stored before the version travelled takes the worker's."""
    types, row = {"fahrer_größe": "int64"}, {"fahrer_größe": 7}
    spec = json.loads(json.dumps(layout_spec(FeastLayout(types, 3, name_length="chars"))))
    worker = Settings(entity_key_serialization_version=2, join_key_name_length="bytes")
    rebuilt = layout_from_spec(spec, worker)
    assert isinstance(rebuilt, FeastLayout)
    assert rebuilt.encoder.entity_id([7]) == expected_id(types, row, "chars")
    del spec["serialization_version"]
    older = layout_from_spec(spec, worker)
    assert isinstance(older, FeastLayout)
    assert older.encoder.entity_id([7]) == v2_id("fahrer_größe", 7)


def test_a_feature_reference_jobs_plan_carries_the_submitters_encoding() -> None:
    """A job of feature references stores its plan with the submitter's key encoding, and
    each shard's reader uses it over the worker's settings; a plan stored before plans
    carried it takes the worker's (so a worker without join_key_name_length refuses the
    name, as before)."""
    types, row = {"fahrer_größe": "int64"}, {"fahrer_größe": 7}
    plan = ViewsPlan([ViewRead("fahrer", "p.fahrer", types, ["score"], 0.0)], ["score"],
                     [(0, 0)], ["fahrer_größe"], key_encoding=KeyEncoding.of(
                         Settings(join_key_name_length="chars")))
    spec = json.loads(json.dumps(plan.to_spec()))
    assert ViewsPlan.from_spec(spec) == plan
    for worker in (Settings(join_key_name_length="bytes"),
                   Settings(join_key_name_length=None, entity_key_serialization_version=2)):
        layout = ViewsReader.build(ViewsPlan.from_spec(spec), worker).readers[0].layout
        assert isinstance(layout, FeastLayout)
        assert layout.encoder.entity_id([7]) == expected_id(types, row, "chars")
    del spec["key_encoding"]
    older = ViewsReader.build(ViewsPlan.from_spec(spec), Settings(
        join_key_name_length="bytes", entity_key_serialization_version=2)).readers[0].layout
    assert isinstance(older, FeastLayout)
    assert older.encoder.entity_id([7]) == v2_id("fahrer_größe", 7)
    with pytest.raises(EntityKeyError, match="fahrer_größe"):
        ViewsReader.build(ViewsPlan.from_spec(spec), Settings(join_key_name_length=None))


def test_feast_references_read_with_the_settings_choice() -> None:
    """A read of feature-view references builds each view's layout from the settings."""
    plan = ViewsPlan([ViewRead("fahrer", "p.fahrer", {"fahrer_größe": "int64"}, ["score"],
                               0.0)], ["score"], [(0, 0)], ["fahrer_größe"])
    chosen = ViewsReader.build(plan, Settings(join_key_name_length="chars"))
    layout = chosen.readers[0].layout
    assert isinstance(layout, FeastLayout)
    assert layout.encoder.entity_id([7]) == expected_id({"fahrer_größe": "int64"},
                                                        {"fahrer_größe": 7}, "chars")
    with pytest.raises(EntityKeyError, match="fahrer_größe"):
        ViewsReader.build(plan, Settings(join_key_name_length=None))
