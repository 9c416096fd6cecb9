"""featurepull's entity-key serialization uses Feast 0.67's ValueType enum numbers: each join-key
type, alone and all together, serializes byte for byte as Feast's own serialize_entity_key."""

from __future__ import annotations

from typing import Any

import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from featurepull.dynamo.feast_keys import KEY_TYPES, EntityKeyEncoder

# key type -> (featurepull's join-key value, the Feast Value field holding it)
SAMPLES: dict[str, tuple[Any, str]] = {
    "int64": (-(2**62), "int64_val"),
    "int32": (-7, "int32_val"),
    "string": ("zoné", "string_val"),
    "bytes": (b"\x00\xff", "bytes_val"),
    "unix_timestamp": (1_700_000_000, "unix_timestamp_val"),
}
pytestmark = pytest.mark.filterwarnings("ignore:Serialization of entity key with version < 3")


def test_every_key_type_has_a_sample() -> None:
    assert sorted(SAMPLES) == sorted(KEY_TYPES)


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("names", [[t] for t in KEY_TYPES] + [list(KEY_TYPES)])
def test_serialized_as_feast_serializes(names: list[str], version: int) -> None:
    join_keys = {f"k_{name}": name for name in names}
    encoder = EntityKeyEncoder(join_keys, version)
    values = [SAMPLES[join_keys[key]][0] for key in encoder.names]
    feast_key = EntityKey(join_keys=list(join_keys), entity_values=[
        Value(**{SAMPLES[name][1]: SAMPLES[name][0]}) for name in join_keys.values()])
    assert encoder.serialize(values) == serialize_entity_key(feast_key, version)
