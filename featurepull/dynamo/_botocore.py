"""The three private parts of a boto3 client the fast transport reads, in one place.

botocore has no public way to ask a client for the credentials it signs with, the CA bundle
(or ``verify=False``) it checks HTTPS with, or the proxy it would send a request through, and
the fast transport must do exactly what the client would do. So it reads them here, and only
here:

==========================  ==========================================  ===================
what                        where, in botocore 1.34 - 1.43              used for
==========================  ==========================================  ===================
signing credentials         ``client._request_signer._credentials``     SigV4 (refreshed as
                                                                        boto3 refreshes)
HTTPS verification          ``client._endpoint.http_session._verify``   the TLS context
proxy configuration         ``client._endpoint.http_session``           an endpoint behind a
                            ``._proxy_config.proxy_url_for(url)``       proxy → botocore
==========================  ==========================================  ===================

pyproject bounds botocore below the next minor version, and
``tests/dynamo/test_botocore_internals.py`` checks all three on the installed botocore. A
botocore that moved one raises :class:`BotocoreInternalsChanged` naming it, instead of a
read that silently skips certificate checks or a proxy.
"""

from __future__ import annotations

from typing import Any

from featurepull.dynamo._env_client import EnvClient
from featurepull.errors import RunFailed

__all__ = ["BotocoreInternalsChanged", "client_proxy_url", "client_verify",
           "signing_credentials"]


class BotocoreInternalsChanged(RunFailed, RuntimeError):
    """The installed botocore no longer has a private attribute the fast transport reads
    (exit 1: the input is fine, the installation is not)."""

    def __init__(self, path: str, problem: str) -> None:
        import botocore  # only a botocore client has these attributes: it is loaded

        super().__init__(
            f"botocore {botocore.__version__} changed {path} ({problem}), which featurepull's "
            "fast transport reads; set dynamodb.transport = 'botocore' "
            "(FEATUREPULL_DYNAMODB__TRANSPORT=botocore) or install a botocore featurepull "
            "supports (pip install 'botocore<1.44')")


def _attribute(obj: Any, path: str, name: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise BotocoreInternalsChanged(path, "no such attribute") from None


def signing_credentials(client: Any) -> Any:
    """The credentials object the client's signer uses (None when boto3 found none);
    ``get_frozen_credentials()`` gives the current access key, secret and token."""
    if isinstance(client, EnvClient):
        return client.credentials
    path = "client._request_signer._credentials"
    signer = _attribute(client, path, "_request_signer")
    credentials = _attribute(signer, path, "_credentials")
    if credentials is not None and not callable(
            getattr(credentials, "get_frozen_credentials", None)):
        raise BotocoreInternalsChanged(path, f"a {type(credentials).__name__} without "
                                             "get_frozen_credentials()")
    return credentials


def _http_session(client: Any, path: str) -> Any:
    endpoint = _attribute(client, path, "_endpoint")
    return _attribute(endpoint, path, "http_session")


def client_verify(client: Any) -> bool | str:
    """What the client verifies HTTPS with: True, False, or a CA bundle path (AWS_CA_BUNDLE,
    ``ca_bundle`` in the profile, or botocore's default bundle)."""
    if isinstance(client, EnvClient):
        return client.verify
    path = "client._endpoint.http_session._verify"
    value = _attribute(_http_session(client, path), path, "_verify")
    if not isinstance(value, bool | str):
        raise BotocoreInternalsChanged(path, f"a {type(value).__name__}, not a bool or a path")
    return value


def client_proxy_url(client: Any) -> str | None:
    """The proxy the client would send a request to its endpoint through, if any."""
    if isinstance(client, EnvClient):
        return None  # there is none: an EnvClient is made only where no proxy is set
    path = "client._endpoint.http_session._proxy_config.proxy_url_for"
    config = _attribute(_http_session(client, path), path, "_proxy_config")
    proxy_url_for = _attribute(config, path, "proxy_url_for")
    url = proxy_url_for(client.meta.endpoint_url)
    if url is not None and not isinstance(url, str):
        raise BotocoreInternalsChanged(path, f"answered a {type(url).__name__}, not a URL")
    return url or None
