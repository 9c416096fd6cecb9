"""Feast's registry, read without the Feast SDK: feature views, their entities' join keys and
types, features, TTLs, and feature services.

The registry a ``feature_store.yaml`` names is one serialized ``feast.core.Registry``
protobuf, in a local file (a relative path is taken from the yaml's directory, as Feast does)
or an ``s3://`` object. Its message classes are built at runtime from a descriptor that
mirrors the few fields of Feast's ``protos/feast/core/*.proto`` (Feast 0.67) read here;
every other field is skipped by protobuf as unknown. SQL, Snowflake and remote registries
are refused, naming what is supported.

A registry is parsed once per process and kept until its file changes (mtime and size for a
file, the ETag for an S3 object): the next job after ``feast apply`` sees the new one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from featurepull.config import ConfigError, S3Settings

_F = descriptor_pb2.FieldDescriptorProto
DEFAULT_REGISTRY = "data/registry.db"  # Feast's default when the yaml names none
DUMMY_ENTITY = "__dummy"  # what Feast names the entity of a view without entities
# Feast's ValueType enum (protos/feast/types/Value.proto), as far as join keys go: the kinds
# Feast can hash into an entity key, under featurepull's key type names.
JOIN_KEY_TYPES = {1: "bytes", 2: "string", 3: "int32", 4: "int64", 8: "unix_timestamp"}
_VALUE_TYPE_NAMES = {0: "invalid", 1: "bytes", 2: "string", 3: "int32", 4: "int64",
                     5: "double", 6: "float", 7: "bool", 8: "unix_timestamp", 19: "null"}
SUPPORTED = ("a local registry file (registry: data/registry.db, relative to the repo) or an "
             "s3:// object (registry: s3://bucket/registry.db)")

# message name -> fields (name, number, type, message type or None, repeated)
_MESSAGES: dict[str, list[tuple[str, int, Any, str | None, bool]]] = {
    "Registry": [("entities", 1, _F.TYPE_MESSAGE, "Entity", True),
                 ("feature_views", 6, _F.TYPE_MESSAGE, "FeatureView", True),
                 ("feature_services", 7, _F.TYPE_MESSAGE, "FeatureService", True),
                 ("on_demand_feature_views", 8, _F.TYPE_MESSAGE, "NamedView", True),
                 ("stream_feature_views", 14, _F.TYPE_MESSAGE, "NamedView", True)],
    "Entity": [("spec", 1, _F.TYPE_MESSAGE, "EntitySpecV2", False)],
    "EntitySpecV2": [("name", 1, _F.TYPE_STRING, None, False),
                     ("value_type", 2, _F.TYPE_INT32, None, False),
                     ("join_key", 4, _F.TYPE_STRING, None, False),
                     ("project", 9, _F.TYPE_STRING, None, False)],
    "FeatureView": [("spec", 1, _F.TYPE_MESSAGE, "FeatureViewSpec", False)],
    "FeatureViewSpec": [("name", 1, _F.TYPE_STRING, None, False),
                        ("project", 2, _F.TYPE_STRING, None, False),
                        ("entities", 3, _F.TYPE_STRING, None, True),
                        ("features", 4, _F.TYPE_MESSAGE, "FeatureSpecV2", True),
                        ("ttl", 6, _F.TYPE_MESSAGE, "Duration", False),
                        ("entity_columns", 12, _F.TYPE_MESSAGE, "FeatureSpecV2", True)],
    "FeatureSpecV2": [("name", 1, _F.TYPE_STRING, None, False),
                      ("value_type", 2, _F.TYPE_INT32, None, False)],
    "Duration": [("seconds", 1, _F.TYPE_INT64, None, False),
                 ("nanos", 2, _F.TYPE_INT32, None, False)],
    "FeatureService": [("spec", 1, _F.TYPE_MESSAGE, "FeatureServiceSpec", False)],
    "FeatureServiceSpec": [("name", 1, _F.TYPE_STRING, None, False),
                           ("project", 2, _F.TYPE_STRING, None, False),
                           ("features", 3, _F.TYPE_MESSAGE, "FeatureViewProjection", True)],
    "FeatureViewProjection": [("feature_view_name", 1, _F.TYPE_STRING, None, False),
                              ("feature_columns", 2, _F.TYPE_MESSAGE, "FeatureSpecV2", True)],
    # On-demand and stream views: only their names, to say why they cannot be read here.
    "NamedView": [("spec", 1, _F.TYPE_MESSAGE, "NamedSpec", False)],
    "NamedSpec": [("name", 1, _F.TYPE_STRING, None, False),
                  ("project", 2, _F.TYPE_STRING, None, False)],
}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="featurepull/feast_core_registry.proto", package="feast.core", syntax="proto3")
    for name, fields in _MESSAGES.items():
        message = fdp.message_type.add(name=name)
        for field_name, number, ftype, type_name, repeated in fields:
            entry = message.field.add(name=field_name, number=number, type=ftype,
                                      label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if type_name:
                entry.type_name = f".feast.core.{type_name}"
    return fdp


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file_descriptor())
RegistryProto: Any = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName("feast.core.Registry"))


class RegistryError(ConfigError):
    """The registry cannot be found, read or used as asked; the message names the fix."""


@dataclass(frozen=True)
class ViewDef:
    """One feature view of the registry: what a read of its online table needs."""

    name: str
    join_keys: dict[str, str]  # join key -> featurepull key type (int64, string, ...)
    features: dict[str, str]  # feature -> Feast value type name
    ttl_s: float  # 0: no TTL


@dataclass
class FeastRegistry:
    """The views and feature services of one project of a registry."""

    source: str
    project: str
    views: dict[str, ViewDef] = field(default_factory=dict)
    services: dict[str, list[tuple[str, list[str]]]] = field(default_factory=dict)
    other_views: dict[str, str] = field(default_factory=dict)  # name -> why it is unreadable

    def view(self, name: str) -> ViewDef:
        """The view named, or a RegistryError listing the project's views."""
        if name in self.views:
            return self.views[name]
        if name in self.other_views:
            raise RegistryError(self.other_views[name])
        raise RegistryError(f"the registry {self.source} has no feature view {name!r} in "
                            f"project {self.project!r}; its views are "
                            f"{', '.join(sorted(self.views)) or 'none'}")

    def service(self, name: str) -> list[str]:
        """The ``view:feature`` references of a feature service, in its order."""
        if name not in self.services:
            raise RegistryError(f"the registry {self.source} has no feature service {name!r} "
                                f"in project {self.project!r}; its services are "
                                f"{', '.join(sorted(self.services)) or 'none'}")
        refs: list[str] = []
        for view_name, features in self.services[name]:
            chosen = features or list(self.view(view_name).features)
            refs.extend(f"{view_name}:{feature}" for feature in chosen)
        return refs


def registry_location(feature_store_yaml: str) -> str:
    """Where the yaml's registry lives: an absolute local path or an ``s3://`` URI."""
    path = Path(feature_store_yaml)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RegistryError(f"feature_store.yaml {path} does not exist") from None
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError(f"cannot read {path}: {exc}") from None
    registry = doc.get("registry", DEFAULT_REGISTRY) if isinstance(doc, dict) else None
    kind = "file"
    if isinstance(registry, dict):
        kind = str(registry.get("registry_type", "file"))
        registry = registry.get("path")
    if kind != "file" or not isinstance(registry, str) or not registry:
        raise RegistryError(f"{path}: the registry is {kind!r} ({registry!r}); featurepull "
                            f"reads {SUPPORTED}")
    if registry.startswith("s3://"):
        return registry
    if "://" in registry:
        raise RegistryError(f"{path}: registry {registry!r} is not readable by featurepull; "
                            f"it reads {SUPPORTED}")
    location = Path(registry)
    return str(location if location.is_absolute() else path.parent / location)


def _join_keys(spec: Any, entities: dict[str, Any], source: str) -> dict[str, str]:
    declared = {column.name: column.value_type for column in spec.entity_columns}
    keys: dict[str, str] = {}
    for entity_name in spec.entities:
        if entity_name == DUMMY_ENTITY:
            break  # an entityless view, refused below
        entity = entities.get(entity_name)
        if entity is None:
            raise RegistryError(f"{source}: feature view {spec.name!r} names entity "
                                f"{entity_name!r}, which the registry does not hold")
        join_key = entity.join_key or entity.name
        kind = declared.get(join_key) or entity.value_type
        if kind not in JOIN_KEY_TYPES:
            raise RegistryError(
                f"{source}: join key {join_key!r} of feature view {spec.name!r} has value "
                f"type {_VALUE_TYPE_NAMES.get(kind, kind)!r}; Feast entity keys are "
                f"{', '.join(JOIN_KEY_TYPES.values())}")
        keys[join_key] = JOIN_KEY_TYPES[kind]
    if not keys:
        raise RegistryError(f"{source}: feature view {spec.name!r} has no entities; "
                            "featurepull reads views keyed by at least one join key")
    return keys


def parse_registry(data: bytes, source: str, project: str) -> FeastRegistry:
    """The views and services of ``project`` in a serialized Registry."""
    try:
        message = RegistryProto.FromString(data)
    except DecodeError as exc:
        raise RegistryError(f"{source} is not a Feast registry (protobuf: {exc}); point "
                            "registry: at the file `feast apply` writes") from None
    found = FeastRegistry(source, project)
    entities = {e.spec.name: e.spec for e in message.entities if e.spec.project == project}
    for view in message.feature_views:
        spec = view.spec
        if spec.project != project:
            continue
        features = {f.name: _VALUE_TYPE_NAMES.get(f.value_type, f"type {f.value_type}")
                    for f in spec.features}
        ttl = spec.ttl.seconds + spec.ttl.nanos / 1e9
        try:
            found.views[spec.name] = ViewDef(spec.name, _join_keys(spec, entities, source),
                                             features, ttl)
        except RegistryError as exc:  # refused when a request names it, not before
            found.other_views[spec.name] = str(exc)
    for kind, views in (("an on-demand feature view", message.on_demand_feature_views),
                        ("a stream feature view", message.stream_feature_views)):
        for other in views:
            if other.spec.project == project:
                found.other_views[other.spec.name] = (
                    f"feature view {other.spec.name!r} is {kind}; featurepull reads the "
                    "online tables of batch feature views")
    for service in message.feature_services:
        if service.spec.project == project:
            found.services[service.spec.name] = [
                (p.feature_view_name, [c.name for c in p.feature_columns])
                for p in service.spec.features]
    if not found.views and not found.other_views:
        raise RegistryError(f"the registry {source} holds no feature view of project "
                            f"{project!r}; check project: in feature_store.yaml (or "
                            "--project), and run `feast apply`")
    return found


_cache: dict[tuple[str, str], tuple[Any, FeastRegistry]] = {}
_lock = threading.Lock()


def _s3_object(uri: str, s3: S3Settings, stamp: Any) -> tuple[Any, bytes | None]:
    import botocore.exceptions

    from featurepull.aws import default_session

    bucket, _, key = uri[len("s3://"):].partition("/")
    client = default_session().create_client("s3", endpoint_url=s3.endpoint_url,
                                             region_name=s3.region)
    try:
        etag = client.head_object(Bucket=bucket, Key=key)["ETag"]
        if etag == stamp:
            return etag, None
        return etag, client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise RegistryError(f"cannot read the registry {uri}: {code or exc}; check the "
                            "registry: path of feature_store.yaml and the S3 settings") from None


def load_registry(location: str, project: str, s3: S3Settings | None = None) -> FeastRegistry:
    """The registry at ``location`` (from :func:`registry_location`), parsed once per process
    and parsed again when the file or object changed."""
    key = (location, project)
    with _lock:
        stamp, cached = _cache.get(key, (None, None))
    if location.startswith("s3://"):
        new_stamp, data = _s3_object(location, s3 or S3Settings(), stamp)
    else:
        try:
            status = Path(location).stat()
            new_stamp = (status.st_mtime_ns, status.st_size)
            data = None if new_stamp == stamp else Path(location).read_bytes()
        except FileNotFoundError:
            raise RegistryError(f"the registry {location} does not exist; run `feast apply` "
                                "in the repo, or fix registry: in feature_store.yaml") from None
        except OSError as exc:
            raise RegistryError(f"cannot read the registry {location}: {exc}") from None
    if data is None and cached is not None:
        return cached
    assert data is not None
    registry = parse_registry(data, location, project)
    with _lock:
        _cache[key] = (new_stamp, registry)
    return registry
