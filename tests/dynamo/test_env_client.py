"""The botocore-free client of a console pull (featurepull.dynamo._env_client): where it is
made, it answers what botocore's client answers in the same environment (region, endpoint,
signing credentials, CA bundle, no proxy, DescribeTable); wherever botocore might answer
otherwise, none is made. Compared with the installed botocore, on a real endpoint."""

from __future__ import annotations

import socket
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from featurepull.bench.endpoint import EndpointProcess
from featurepull.config import DynamoSettings
from featurepull.dynamo._botocore import client_proxy_url, client_verify, signing_credentials
from featurepull.dynamo._env_client import EnvClient, env_client
from featurepull.dynamo.client import build_client
from tests.conftest import FAST_TABLE, without_aws_settings

ENDPOINT = "http://127.0.0.1:8000"
ENV = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret"}


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """An environment with no AWS or proxy variable and a home without ~/.aws."""
    import os

    for name in os.environ.keys() - without_aws_settings(os.environ).keys():
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def _botocore_client(settings: DynamoSettings) -> Any:
    # A session of its own: the process's shared one keeps the credentials it found first.
    return build_client(settings.model_copy(update={"session_based_auth": True}))


def _same_as_botocore(settings: DynamoSettings) -> EnvClient:
    """The EnvClient for the current environment, checked against botocore's client."""
    import os

    ours = env_client(settings, dict(os.environ))
    assert ours is not None
    theirs = _botocore_client(settings)
    assert (ours.meta.region_name, ours.meta.endpoint_url) == (
        theirs.meta.region_name, theirs.meta.endpoint_url)
    frozen = signing_credentials(theirs).get_frozen_credentials()
    mine = signing_credentials(ours).get_frozen_credentials()
    assert (mine.access_key, mine.secret_key, mine.token) == (
        frozen.access_key, frozen.secret_key, frozen.token)
    assert client_verify(ours) == client_verify(theirs)
    assert client_proxy_url(ours) is None and client_proxy_url(theirs) is None
    return ours


@pytest.mark.parametrize("extra", [
    {},
    {"AWS_SESSION_TOKEN": "token-1"},
    {"AWS_CA_BUNDLE": "/etc/ssl/a-bundle.pem"},
    {"REQUESTS_CA_BUNDLE": "/etc/ssl/requests-bundle.pem"},
    {"AWS_CA_BUNDLE": "/a.pem", "REQUESTS_CA_BUNDLE": "/b.pem"},
])
def test_answers_what_botocore_answers(aws_env: pytest.MonkeyPatch,
                                       extra: dict[str, str]) -> None:
    for name, value in extra.items():
        aws_env.setenv(name, value)
    ours = _same_as_botocore(DynamoSettings(region="eu-west-2", endpoint_url=ENDPOINT))
    assert ours.credentials.token == extra.get("AWS_SESSION_TOKEN")


def test_region_from_the_environment_and_https(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("AWS_DEFAULT_REGION", "ap-southeast-2")
    ours = _same_as_botocore(DynamoSettings(endpoint_url="https://dynamo.example.com:8443"))
    assert ours.meta.region_name == "ap-southeast-2"
    # The setting wins over the environment, in botocore and here.
    assert _same_as_botocore(DynamoSettings(
        region="us-west-2", endpoint_url=ENDPOINT)).meta.region_name == "us-west-2"


@pytest.mark.parametrize(("env", "settings"), [
    ({"AWS_PROFILE": "dev"}, {}),  # a profile's region, endpoint, CA bundle, ...
    ({"AWS_DEFAULT_PROFILE": "dev"}, {}),
    ({"AWS_CREDENTIAL_EXPIRATION": "2030-01-01T00:00:00Z"}, {}),  # refreshable credentials
    ({"AWS_SECURITY_TOKEN": "old-name"}, {}),
    ({"AWS_ACCOUNT_ID": "123456789012"}, {}),
    ({"AWS_ENDPOINT_URL_DYNAMODB": "http://other:1"}, {}),
    ({"AWS_ENDPOINT_URL": "http://other:1"}, {}),
    ({"AWS_USE_FIPS_ENDPOINT": "true"}, {}),
    ({"AWS_CONFIG_FILE": "/nowhere"}, {}),
    ({"AWS_MAX_ATTEMPTS": "2"}, {}),
    ({"BOTO_CONFIG": "/nowhere"}, {}),
    ({"HTTPS_PROXY": "http://proxy:3128"}, {}),
    ({"no_proxy": "localhost"}, {}),
    ({"AWS_CA_BUNDLE": " "}, {}),  # botocore refuses a blank bundle
    ({"AWS_SECRET_ACCESS_KEY": ""}, {}),  # botocore: partial credentials
    ({}, {"endpoint_url": None}),  # botocore's endpoint rules
    ({}, {"transport": "botocore"}),
    ({}, {"region": "local"}),
    ({}, {"endpoint_url": "http://[::1]:8000"}),
    ({}, {"endpoint_url": "http://127.0.0.1:8000/path"}),
    ({}, {"endpoint_url": "http://user@host:8000"}),
    ({}, {"endpoint_url": "http://localhost:99999"}),  # botocore's own error for the port
])
def test_none_where_botocore_may_answer_otherwise(aws_env: pytest.MonkeyPatch,
                                                  env: dict[str, str],
                                                  settings: dict[str, object]) -> None:
    import os

    for name, value in env.items():
        aws_env.setenv(name, value)
    chosen = DynamoSettings(**{"region": "us-east-1", "endpoint_url": ENDPOINT, **settings})
    assert env_client(chosen, dict(os.environ)) is None


def test_no_secret_in_a_repr(aws_env: pytest.MonkeyPatch) -> None:
    import os

    aws_env.setenv("AWS_SESSION_TOKEN", "the-token")
    client = env_client(DynamoSettings(region="us-east-1", endpoint_url=ENDPOINT),
                        dict(os.environ))
    assert client is not None
    shown = repr(client.credentials)
    assert client.credentials.access_key in shown
    assert client.credentials.secret_key not in shown and "the-token" not in shown


def test_none_with_a_shared_config_file(aws_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    settings = DynamoSettings(region="us-east-1", endpoint_url=ENDPOINT)
    assert env_client(settings, dict(os.environ)) is not None
    # A shared credentials file alone changes nothing: the environment's keys come first.
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\naws_access_key_id = other\n")
    assert env_client(settings, dict(os.environ)) is not None
    (tmp_path / ".aws" / "config").write_text("[default]\nendpoint_url = http://other:1\n")
    assert env_client(settings, dict(os.environ)) is None


def test_describe_table_as_botocore(aws_env: pytest.MonkeyPatch,
                                    fast_dynamo: EndpointProcess) -> None:
    import os

    from tests.faultproxy import FaultProxy

    with FaultProxy(fast_dynamo.url) as proxy:  # counts the requests
        settings = DynamoSettings(region="us-east-1", endpoint_url=proxy.url)
        ours = env_client(settings, dict(os.environ))
        assert ours is not None
        table = ours.describe_table(TableName=FAST_TABLE)["Table"]
        assert proxy.counts["describe_requests"] == 1  # its own request answered: no botocore
    settings = DynamoSettings(region="us-east-1", endpoint_url=fast_dynamo.url)
    theirs = _botocore_client(settings).describe_table(TableName=FAST_TABLE)["Table"]
    # Timestamps aside (botocore parses them to datetimes; nothing reads them), the same.
    assert {k: v for k, v in table.items() if not k.endswith("DateTime")} == {
        k: v for k, v in theirs.items() if not k.endswith("DateTime")}
    assert table["KeySchema"] and table["ItemCount"] == theirs["ItemCount"]


def test_describe_table_failure_is_botocores(aws_env: pytest.MonkeyPatch,
                                             fast_dynamo: EndpointProcess) -> None:
    # Anything but a clean answer is asked again of botocore: its error, its message.
    import os

    settings = DynamoSettings(region="us-east-1", endpoint_url=fast_dynamo.url)
    ours = env_client(settings, dict(os.environ))
    assert ours is not None
    with pytest.raises(botocore.exceptions.ClientError) as mine:
        ours.describe_table(TableName="no.such_table")
    with pytest.raises(botocore.exceptions.ClientError) as botocores:
        _botocore_client(settings).describe_table(TableName="no.such_table")
    assert str(mine.value) == str(botocores.value)
    assert mine.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_unreachable_endpoint_is_botocores(aws_env: pytest.MonkeyPatch) -> None:
    import os

    from tests.conftest import refused_port

    with refused_port() as port:
        settings = DynamoSettings(region="us-east-1", endpoint_url=f"http://127.0.0.1:{port}",
                                  total_max_retry_attempts=1)
        ours = env_client(settings, dict(os.environ))
        assert ours is not None
        with pytest.raises(botocore.exceptions.EndpointConnectionError) as mine:
            ours.describe_table(TableName=FAST_TABLE)
        with pytest.raises(botocore.exceptions.EndpointConnectionError) as botocores:
            _botocore_client(settings).describe_table(TableName=FAST_TABLE)
    assert str(mine.value) == str(botocores.value)


@pytest.mark.parametrize("errors", [1, 2])
def test_describe_table_answered_500_then_botocores_answer(
        aws_env: pytest.MonkeyPatch, fast_dynamo: EndpointProcess, errors: int) -> None:
    # Our request gets the first 500 and is asked again through botocore's client, which
    # retries a further 500 itself (here it may make 2 attempts): the answer is botocore's.
    import os

    from tests.faultproxy import FaultPlan, FaultProxy

    with FaultProxy(fast_dynamo.url, FaultPlan(describe_errors=errors)) as proxy:
        settings = DynamoSettings(region="us-east-1", endpoint_url=proxy.url,
                                  total_max_retry_attempts=2)
        ours = env_client(settings, dict(os.environ))
        assert ours is not None
        table = ours.describe_table(TableName=FAST_TABLE)
        assert (proxy.counts["describe_requests"], proxy.counts["describe_errors"]) == (
            errors + 1, errors)
    theirs = _botocore_client(DynamoSettings(region="us-east-1", endpoint_url=fast_dynamo.url))
    assert table["Table"] == theirs.describe_table(TableName=FAST_TABLE)["Table"]
    assert table["ResponseMetadata"]["RetryAttempts"] == errors - 1


def test_the_switch_is_part_of_the_process_clients_key(aws_env: pytest.MonkeyPatch) -> None:
    # A client cached while EnvClients were allowed is not handed out once they are not.
    from featurepull.dynamo.client import env_clients, process_client

    settings = DynamoSettings(region="us-east-1", endpoint_url="http://127.0.0.1:8009")
    env_clients(True)
    try:
        allowed = process_client(settings)
    finally:
        env_clients(False)
    assert isinstance(allowed, EnvClient)
    botocores = process_client(settings)
    assert not isinstance(botocores, EnvClient)
    assert botocores.meta.endpoint_url == "http://127.0.0.1:8009"
    env_clients(True)
    try:
        assert process_client(settings) is allowed  # each still cached under its own key
    finally:
        env_clients(False)


@contextmanager
def _unaccepted_port() -> Iterator[int]:
    """A loopback port whose listen queue is full: Linux drops a new connection's SYN, so a
    connect waits out its own timeout."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        fillers = [socket.socket() for _ in range(8)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(server.getsockname())
            yield int(server.getsockname()[1])
        finally:
            for filler in fillers:
                filler.close()


@contextmanager
def _raw_endpoint(reply: bytes | None) -> Iterator[str]:
    """An HTTP endpoint on loopback that answers every request with the bytes ``reply``, or
    (None) reads it and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed: the test is over
            held.append(conn)
            conn.recv(65536)
            if reply is not None:
                conn.sendall(reply)
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone would not)
        server.close()
        thread.join(10)
        for conn in held:
            conn.close()


def _describe_within(client: EnvClient, seconds: float = 30.0) -> object:
    """``client._describe``'s answer, which must come within ``seconds`` (a generous bound
    on timeouts of a fraction of a second: without them it would wait for minutes)."""
    answers: list[object] = []
    thread = threading.Thread(target=lambda: answers.append(client._describe(FAST_TABLE)),
                              daemon=True)
    thread.start()
    thread.join(seconds)
    assert answers, f"DescribeTable still waiting after {seconds} s: no timeout"
    return answers[0]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_connection_that_never_opens_times_out(aws_env: pytest.MonkeyPatch,
                                                 scheme: str) -> None:
    # connect_timeout: then botocore's turn (None), which has its own.
    import os

    with _unaccepted_port() as port:
        settings = DynamoSettings(region="us-east-1", endpoint_url=f"{scheme}://127.0.0.1:{port}",
                                  connect_timeout=0.3)
        ours = env_client(settings, dict(os.environ))
        assert ours is not None
        assert _describe_within(ours) is None


def test_an_endpoint_that_never_answers_times_out(aws_env: pytest.MonkeyPatch) -> None:
    import os

    with _raw_endpoint(None) as url:
        settings = DynamoSettings(region="us-east-1", endpoint_url=url, read_timeout=0.3)
        ours = env_client(settings, dict(os.environ))
        assert ours is not None
        assert _describe_within(ours) is None


@pytest.mark.parametrize(("body", "crc"), [
    (b"[]", b""), (b'{"Table": []}', b""), (b'{"Table": "t"}', b""), (b"{}", b""), (b"{", b""),
    (b'{"Table": {"TableName": "t"}}', b"X-Amz-Crc32: 1\r\n"),  # damaged on the way
])
def test_a_200_that_is_no_description_is_botocores_to_judge(aws_env: pytest.MonkeyPatch,
                                                            body: bytes, crc: bytes) -> None:
    import os

    reply = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n%s"
             b"Content-Length: %d\r\n\r\n%s" % (crc, len(body), body))
    with _raw_endpoint(reply) as url:
        ours = env_client(DynamoSettings(region="us-east-1", endpoint_url=url),
                          dict(os.environ))
        assert ours is not None
        assert _describe_within(ours) is None
    # and a clean one is taken, header names in any case
    good = b'{"Table": {"TableName": "t"}}'
    reply = (b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: %d\r\nX-AMZ-CRC32: %d\r\n\r\n%s"
             % (len(good), zlib.crc32(good), good))
    with _raw_endpoint(reply) as url:
        ours = env_client(DynamoSettings(region="us-east-1", endpoint_url=url),
                          dict(os.environ))
        assert ours is not None
        assert _describe_within(ours) == {"TableName": "t"}


@pytest.mark.parametrize("missing", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
def test_none_without_both_keys(aws_env: pytest.MonkeyPatch, missing: str) -> None:
    # Not set at all (an empty one is in the table above): botocore looks further.
    import os

    aws_env.delenv(missing)
    assert env_client(DynamoSettings(region="us-east-1", endpoint_url=ENDPOINT),
                      dict(os.environ)) is None


def test_none_without_a_region(aws_env: pytest.MonkeyPatch) -> None:
    import os

    assert env_client(DynamoSettings(endpoint_url=ENDPOINT), dict(os.environ)) is None


@pytest.mark.parametrize("name", ["HTTPS_PROXY", "no_proxy"])
def test_none_with_a_proxy_in_the_environment_given(aws_env: pytest.MonkeyPatch,
                                                   name: str) -> None:
    # The environment passed in, not only this process's (which urllib reads).
    import os

    assert env_client(DynamoSettings(region="us-east-1", endpoint_url=ENDPOINT),
                      {**os.environ, name: "http://proxy:3128"}) is None
