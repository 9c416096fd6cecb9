"""The private botocore attributes the fast transport reads are where it expects them on the
installed botocore (a newer botocore that moved one fails here, naming it), and a client
without them is refused with the attribute, the version and the way out."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import boto3
import botocore
import botocore.config
import botocore.credentials
import pytest

from featurepull.config import DynamoSettings
from featurepull.dynamo._botocore import (
    BotocoreInternalsChanged,
    client_proxy_url,
    client_verify,
    signing_credentials,
)
from featurepull.dynamo.transport import FastTransport

REGION = "eu-west-1"
URL = "http://127.0.0.1:9"


def client(**options: object) -> object:
    return boto3.client("dynamodb", region_name=REGION, endpoint_url=URL,
                        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                        aws_session_token="token", **options)


def test_signing_credentials_are_the_clients_own() -> None:
    credentials = signing_credentials(client())
    assert isinstance(credentials, botocore.credentials.Credentials)
    frozen = credentials.get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == (
        "AKIDEXAMPLE", "secret", "token")


def test_no_credentials_reads_as_none(monkeypatch: pytest.MonkeyPatch,
                                      tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    bare = boto3.session.Session().client("dynamodb", region_name=REGION, endpoint_url=URL)
    assert signing_credentials(bare) is None


@pytest.mark.parametrize(("verify", "expected"), [(None, True), (False, False),
                                                  ("/etc/ssl/custom.pem", "/etc/ssl/custom.pem")])
def test_verify_is_what_the_client_checks_https_with(verify: object, expected: object) -> None:
    options = {} if verify is None else {"verify": verify}
    found = client_verify(client(**options))
    # botocore fills in its own default bundle path for verify=None.
    assert found == expected or (expected is True and isinstance(found, str))


def test_proxy_is_the_one_the_client_would_use() -> None:
    assert client_proxy_url(client()) is None
    proxied = client(config=botocore.config.Config(
        proxies={"http": "http://proxy.invalid:3128"}))
    assert client_proxy_url(proxied) == "http://proxy.invalid:3128"


def test_the_fast_transport_signs_with_the_clients_credentials_object() -> None:
    # The same object, not a copy: a RefreshableCredentials keeps refreshing for both.
    real = client()
    assert FastTransport(real, DynamoSettings()).credentials is signing_credentials(real)


@pytest.mark.parametrize(("moved", "reader", "path"), [
    ("_request_signer", signing_credentials, "client._request_signer._credentials"),
    ("_endpoint", client_verify, "client._endpoint.http_session._verify"),
    ("_endpoint", client_proxy_url, "client._endpoint.http_session._proxy_config"),
])
def test_a_botocore_that_moved_an_attribute_is_named(moved: str, reader: object,
                                                     path: str) -> None:
    real = client()
    changed = SimpleNamespace(meta=real.meta, **{  # type: ignore[attr-defined]
        name: getattr(real, name) for name in ("_request_signer", "_endpoint")
        if name != moved})
    with pytest.raises(BotocoreInternalsChanged) as failure:
        reader(changed)  # type: ignore[operator]
    message = str(failure.value)
    assert path in message
    assert f"botocore {botocore.__version__}" in message
    assert "FEATUREPULL_DYNAMODB__TRANSPORT=botocore" in message


def test_a_verify_of_another_kind_is_refused() -> None:
    real = client()
    session = SimpleNamespace(_verify=object(), _proxy_config=None)
    changed = SimpleNamespace(meta=real.meta,  # type: ignore[attr-defined]
                              _endpoint=SimpleNamespace(http_session=session))
    with pytest.raises(BotocoreInternalsChanged, match="not a bool or a path"):
        client_verify(changed)
