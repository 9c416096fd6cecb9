"""What a job may make a worker touch: the files and S3 prefixes it reads and writes, the
Redis keys it takes entities from, the DynamoDB endpoint it signs requests for.

Anyone who can push to the queue can send ``featurepull.submit_job``; the worker acts with its
own permissions and credentials. These checks bound that, from the workers' own settings:

    jobs.allowed_inputs     where a message's ``entities`` may be (local dirs, s3:// prefixes),
                            and its ``feature_store_yaml`` and the registry that names
    jobs.entity_key_prefix  what a message's ``redis-key:`` entities must start with
    jobs.allowed_outputs    where any job's ``output`` may be written
    jobs.allowed_endpoints  which ``dynamodb.endpoint_url`` any job may name (besides the
                            worker's own)

A list left unset (None) does not limit; the worker warns at start (:func:`start_warning`).
Local paths are compared after ``realpath`` (absolute, symlinks and ``..`` resolved; an output
that does not exist yet resolves through its parent), S3 locations as ``s3://bucket/prefix/``
so ``s3://b/data`` never admits ``s3://b/database/``.

Where they run: ``submit_job`` checks the whole message before anything is read, stored or
enqueued (:meth:`Bounds.for_messages`). ``create_job``, ``run_shard`` and ``finish_job``
check the output and endpoint of every job again (:meth:`Bounds.for_jobs`): a job stored by
``featurepull submit`` or written into Redis directly never passed through ``submit_job``.
For those, the worker's own schedules' outputs and endpoints count as allowed: its own config
is trusted, ``featurepull pull`` (the caller's own process) is not limited at all.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from featurepull.config import Settings
from featurepull.dynamo.http import DEFAULT_PORTS
from featurepull.errors import InputError

S3_SCHEME = "s3://"
REDIS_KEY_SCHEME = "redis-key:"


class RequestOutOfBounds(InputError, ValueError):
    """A job names an input, output or endpoint outside the workers' allowed lists; the
    message names the setting to change (bad input: exit code 2, error kind "input")."""

    def __init__(self, message: str, setting: str = "") -> None:
        super().__init__(message)  # one argument: Celery rebuilds it from its message
        self.setting = setting


def _setting(name: str) -> str:
    return f"jobs.{name} (env FEATUREPULL_JOBS__{name.upper()})"


def _local(path: str) -> str:
    """A local path as it will be opened: absolute, symlinks and ``..`` resolved (for a
    path that does not exist yet, through the deepest part that does)."""
    return os.path.realpath(path)


def _s3_parts(uri: str) -> tuple[str, list[str]]:
    bucket, _, key = uri[len(S3_SCHEME):].partition("/")
    return bucket, key.split("/")


@dataclass(frozen=True)
class _Prefix:
    """One allowed location: a resolved local directory or an ``s3://bucket/prefix/``."""

    text: str

    @classmethod
    def of(cls, entry: str) -> _Prefix:
        if entry.startswith(S3_SCHEME):
            return cls(entry if entry.endswith("/") else entry + "/")
        return cls(_local(entry))

    def admits(self, location: str) -> bool:
        """Whether a normalised location (see :func:`_normalised`) lies under this one."""
        if self.text.startswith(S3_SCHEME):
            return location.startswith(self.text)
        return location == self.text or location.startswith(self.text.rstrip("/") + "/")


def _normalised(location: str, what: str, setting: str) -> str:
    """``location`` as it is compared: a resolved local path, or an s3:// URL without dot
    segments (refused: some S3-compatible stores and proxies resolve them)."""
    if location.startswith(S3_SCHEME):
        bucket, segments = _s3_parts(location)
        if not bucket or any(s in (".", "..") for s in segments):
            raise RequestOutOfBounds(
                f"the job's {what} {location} has no bucket or has '.' or '..' segments, "
                f"which {_setting(setting)} cannot bound; name the object plainly", setting)
        return location
    return _local(location)


def _endpoint(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port that is not a number: matches nothing
        port = -1
    return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


def _template_location(template: str) -> str:
    """Where a schedule's output template writes: the template itself when it has no
    placeholder, else the directory of its fixed part (``/data/{date}/x`` -> ``/data/``)."""
    fixed, brace, _ = template.partition("{")
    if not brace:
        return template
    return fixed[:fixed.rfind("/") + 1] if "/" in fixed else "."


@dataclass(frozen=True)
class Bounds:
    """The allowed inputs, outputs and endpoints of a worker; None: not limited."""

    inputs: tuple[_Prefix, ...] | None
    outputs: tuple[_Prefix, ...] | None
    endpoints: frozenset[tuple[str, str, int | None, str]] | None
    entity_key_prefix: str

    @classmethod
    def for_messages(cls, settings: Settings) -> Bounds:
        """What a ``featurepull.submit_job`` message may name: the configured lists and
        the worker's own endpoint."""
        jobs = settings.jobs
        return cls(_prefixes(jobs.allowed_inputs), _prefixes(jobs.allowed_outputs),
                   _endpoints(jobs.allowed_endpoints, [settings.dynamodb.endpoint_url]),
                   jobs.entity_key_prefix)

    @classmethod
    def for_jobs(cls, settings: Settings) -> Bounds:
        """What any job a worker runs may name: as a message, plus the outputs and
        endpoints of the worker's own schedules (its own config, so trusted)."""
        jobs = settings.jobs
        own_outputs = [_template_location(s.output) for s in settings.schedules]
        own_endpoints = [settings.dynamodb.endpoint_url,
                         *(s.dynamodb.get("endpoint_url") for s in settings.schedules)]
        outputs = (None if jobs.allowed_outputs is None
                   else _prefixes([*jobs.allowed_outputs, *own_outputs]))
        return cls(_prefixes(jobs.allowed_inputs), outputs,
                   _endpoints(jobs.allowed_endpoints, own_endpoints), jobs.entity_key_prefix)

    def check_entities(self, reference: str) -> None:
        """Refuse entities outside jobs.allowed_inputs, or a Redis key outside
        jobs.entity_key_prefix."""
        if reference.startswith(REDIS_KEY_SCHEME):
            name = reference[len(REDIS_KEY_SCHEME):]
            if not name.startswith(self.entity_key_prefix):
                raise RequestOutOfBounds(
                    f"the job's entities {reference} are outside the Redis keys a job may "
                    f"read ({self.entity_key_prefix}*); store them under that prefix, or "
                    f"change {_setting('entity_key_prefix')} in the workers' config",
                    "entity_key_prefix")
            return
        self._check_location(reference, "entities", "allowed_inputs", self.inputs)

    def check_feast_repo(self, feature_store_yaml: str | None) -> None:
        """Refuse a feature_store_yaml, or the registry it names, outside
        jobs.allowed_inputs: the worker reads both."""
        if feature_store_yaml is None or self.inputs is None:
            return
        from featurepull.dynamo.feast_registry import registry_location

        self._check_location(feature_store_yaml, "feature_store_yaml", "allowed_inputs",
                             self.inputs)
        self._check_location(registry_location(feature_store_yaml), "registry",
                             "allowed_inputs", self.inputs)

    def check_output(self, output: str | None) -> None:
        """Refuse an output outside jobs.allowed_outputs."""
        if output:
            self._check_location(output, "output", "allowed_outputs", self.outputs)

    def check_endpoint(self, endpoint_url: object) -> None:
        """Refuse a DynamoDB endpoint other than the worker's own and
        jobs.allowed_endpoints."""
        if endpoint_url is None or self.endpoints is None:
            return
        if not isinstance(endpoint_url, str) or _endpoint(endpoint_url) not in self.endpoints:
            raise RequestOutOfBounds(
                f"the job's dynamodb.endpoint_url {endpoint_url!r} is neither the workers' "
                f"own endpoint nor in {_setting('allowed_endpoints')}; leave it out to read "
                "the workers' DynamoDB, or add it to that setting in the workers' config",
                "allowed_endpoints")

    def check_job(self, output: str | None, dynamodb: Mapping[str, Any]) -> None:
        """What every job is checked for wherever it runs: its output and endpoint."""
        self.check_output(output)
        self.check_endpoint(dynamodb.get("endpoint_url"))

    def check_message(self, entities: str, output: str | None,
                      dynamodb: Mapping[str, Any]) -> None:
        """What a ``featurepull.submit_job`` message is checked for, before anything is
        read: its entities, output and endpoint."""
        self.check_entities(entities)
        self.check_job(output, dynamodb)

    def _check_location(self, location: str, what: str, setting: str,
                        allowed: tuple[_Prefix, ...] | None) -> None:
        if allowed is None:
            return
        resolved = _normalised(location, what, setting)
        if any(prefix.admits(resolved) for prefix in allowed):
            return
        listed = ", ".join(prefix.text for prefix in allowed) or "none"
        raise RequestOutOfBounds(
            f"the job's {what} {location} is outside the locations this deployment allows "
            f"(after resolving symlinks and '..'; allowed: {listed}); use one of them, or add "
            f"its directory or s3:// prefix to {_setting(setting)} in the workers' config",
            setting)


def _prefixes(entries: Iterable[str] | None) -> tuple[_Prefix, ...] | None:
    return None if entries is None else tuple(_Prefix.of(entry) for entry in entries)


def _endpoints(allowed: list[str] | None, own: Iterable[object]
               ) -> frozenset[tuple[str, str, int | None, str]] | None:
    if allowed is None:
        return None
    return frozenset(_endpoint(url) for url in [*allowed, *own] if isinstance(url, str))


def start_warning(settings: Settings) -> str | None:
    """What a worker says at start when a job message is not bounded, or None."""
    jobs = settings.jobs
    unset = [name for name in ("allowed_outputs", "allowed_inputs", "allowed_endpoints")
             if getattr(jobs, name) is None]
    if not unset:
        return None
    can = {"allowed_outputs": "write its output to any path or S3 bucket this worker can "
                              "write (overwriting files with overwrite=true)",
           "allowed_inputs": "read entities from any file or S3 object this worker can read",
           "allowed_endpoints": "send signed DynamoDB requests to any URL"}
    return ("anyone who can push to this worker's queue can make it "
            + "; ".join(can[name] for name in unset)
            + ". Set " + ", ".join(_setting(name) for name in unset)
            + " to bound what a job may touch (see docs/security.md)")
