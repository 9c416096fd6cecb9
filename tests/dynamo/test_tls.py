"""The fast transport over HTTPS, as it reaches real DynamoDB: certificates verified with the
boto3 client's CA bundle, ``verify=False`` honoured, and a certificate that does not verify
failing the read at once with the reason (not retried until the deadline).

Reads in a row shake hands once. A TLS-terminating forwarder (asyncio, in a thread of the
test process) sits in front of the lean bench endpoint, with a certificate for 127.0.0.1
signed by a CA made for the test.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import boto3
import botocore.exceptions
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from featurepull._recently_used import RecentlyUsed
from featurepull.bench.endpoint import FEATURES, expected_features, start_endpoint
from featurepull.config import DynamoSettings
from featurepull.dynamo import BatchReader, FeastLayout, PermanentReadError
from featurepull.dynamo._env_client import env_client
from featurepull.dynamo.client import build_client
from featurepull.dynamo.feast_values import decode_value
from featurepull.dynamo.transport import FastTransport, transport_for
from tests.dynamo.forwarder import Forwarder

TABLE = "tls.driver_stats"
LAYOUT = FeastLayout({"driver_id": "int64"})


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for 127.0.0.1, as PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "featurepull test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class TlsForwarder(Forwarder):
    """Accepts TLS on 127.0.0.1 and forwards the plain bytes to ``upstream``."""

    def __init__(self, upstream: str, cert: Path, key: Path) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        super().__init__(upstream, context)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsForwarder, Path]]:
    ca, cert, key = _certificates(tmp_path_factory.mktemp("tls"))
    with start_endpoint(drivers=500, table=TABLE) as endpoint:
        forwarder = TlsForwarder(endpoint.url, cert, key)
        try:
            yield forwarder, ca
        finally:
            forwarder.stop()


def _reader(url: str, verify: bool | str | None) -> BatchReader:
    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=url, verify=verify,
                          aws_access_key_id="AKIDTLS", aws_secret_access_key="secret")
    settings = DynamoSettings(region="us-east-1", endpoint_url=url, max_read_workers=4,
                              batch_size=25, retry_deadline_s=5)
    assert isinstance(transport_for(client, settings), FastTransport)
    return BatchReader(TABLE, LAYOUT, settings, client=client)


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")  # boto3's, for verify=False
@pytest.mark.parametrize("verify", ["ca", False])
def test_reads_over_https(tls: tuple[TlsForwarder, Path], verify: str | bool) -> None:
    forwarder, ca = tls
    ids = [*range(0, 500, 3), 10_000]  # 167 known, one unknown
    reader = _reader(forwarder.url, str(ca) if verify == "ca" else False)
    result = reader.read(LAYOUT.keys_for({"driver_id": ids}), list(FEATURES))
    cities = [row[FEATURES.index("city") + 1] if row else None for row in result.rows]
    assert cities == [decode_value(expected_features(d)["city"]) for d in ids[:-1]] + [None]
    assert result.stats.requests == 7 and result.stats.connection_errors == 0


def test_reads_in_a_row_shake_hands_once(tls: tuple[TlsForwarder, Path]) -> None:
    # The read's connections are kept between reads (featurepull.dynamo.loops): against
    # DynamoDB a TLS handshake costs a round trip or two more than the TCP connect.
    forwarder, ca = tls
    reader = _reader(forwarder.url, str(ca))
    keys = LAYOUT.keys_for({"driver_id": list(range(200))})  # 8 requests, 4 in flight
    assert reader.read(keys, ["city"]).stats.requests == 8
    accepted = forwarder.accepted
    for _ in range(3):
        assert reader.read(keys, ["city"]).stats.connection_errors == 0
    assert forwarder.accepted == accepted


def test_a_certificate_that_does_not_verify_fails_at_once(
        tls: tuple[TlsForwarder, Path]) -> None:
    forwarder, _ = tls
    reader = _reader(forwarder.url, None)  # botocore's own CA bundle: our test CA is not in it
    # Past the table check (DescribeTable goes through boto3, which refuses the certificate
    # with its own error): this is about the read's own connections.
    reader._checked = True
    with pytest.raises(PermanentReadError, match="TLS certificate does not verify"):
        reader.read(LAYOUT.keys_for({"driver_id": [1, 2]}), ["city"])


def test_env_client_describes_over_https_as_botocore(
        tls: tuple[TlsForwarder, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A console pull's own client (featurepull.dynamo._env_client): its DescribeTable checks
    # the certificate with what botocore's would (AWS_CA_BUNDLE, else certifi's bundle), and a
    # certificate botocore refuses ends in botocore's own error.
    forwarder, ca = tls
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws/config
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    settings = DynamoSettings(region="us-east-1", endpoint_url=forwarder.url,
                              total_max_retry_attempts=1)
    env = {"AWS_ACCESS_KEY_ID": "AKIDTLS", "AWS_SECRET_ACCESS_KEY": "secret"}
    ours = env_client(settings, {**env, "AWS_CA_BUNDLE": str(ca)})
    assert ours is not None and ours.verify == str(ca)
    assert ours.describe_table(TableName=TABLE)["Table"]["TableName"] == TABLE
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    refusing = env_client(settings, env)
    assert refusing is not None and refusing.verify is True
    with pytest.raises(botocore.exceptions.SSLError) as mine:
        refusing.describe_table(TableName=TABLE)
    with pytest.raises(botocore.exceptions.SSLError) as botocores:
        build_client(settings).describe_table(TableName=TABLE)
    assert str(mine.value) == str(botocores.value)


def test_trusts_what_botocore_trusts_not_the_system_store(
        tls: tuple[TlsForwarder, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # With no CA bundle given, botocore checks certificates against certifi's bundle
    # (botocore.httpsession.get_cert_path), not the system's store. Here the system store
    # (SSL_CERT_FILE) trusts the test CA and certifi's does not: botocore refuses the
    # endpoint, and so must the fast transport's reads and the env client's DescribeTable.
    import botocore.httpsession

    import featurepull.dynamo.client as clients
    from featurepull.dynamo.http import tls_context

    forwarder, ca = tls
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws/config
    for name in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    # No TLS context built before SSL_CERT_FILE:
    monkeypatch.setattr(clients, "_clients", RecentlyUsed(clients.CLIENTS_KEPT))
    assert ssl.create_default_context().get_ca_certs()  # the system store: the test CA
    botocores = ssl.create_default_context(cafile=botocore.httpsession.get_cert_path(True))
    assert tls_context(True).get_ca_certs() == botocores.get_ca_certs()

    settings = DynamoSettings(region="us-east-1", endpoint_url=forwarder.url,
                              total_max_retry_attempts=1)
    with pytest.raises(botocore.exceptions.SSLError):
        build_client(settings).describe_table(TableName=TABLE)
    reader = _reader(forwarder.url, None)
    reader._checked = True  # past DescribeTable (botocore refuses it): the read's connections
    with pytest.raises(PermanentReadError, match="TLS certificate does not verify"):
        reader.read(LAYOUT.keys_for({"driver_id": [1, 2]}), ["city"])
    ours = env_client(settings, {"AWS_ACCESS_KEY_ID": "AKIDTLS", "AWS_SECRET_ACCESS_KEY": "s"})
    assert ours is not None and ours._describe(TABLE) is None  # refused: botocore's turn
    with pytest.raises(botocore.exceptions.SSLError):
        ours.describe_table(TableName=TABLE)
