"""The botocore and urllib3 exceptions the read path catches (featurepull.dynamo._aws_errors):
once those modules are loaded, exactly the classes the reader named before they were looked
up lazily; before, none of theirs (none can have been raised), and naming them imports
nothing. The whole path — an error answer read by a process that had not imported botocore —
runs in tests/test_imports.py."""

from __future__ import annotations

import subprocess
import sys

import botocore.exceptions
import botocore.parsers
import urllib3.exceptions

from featurepull.dynamo._aws_errors import (
    client_errors,
    connection_errors,
    no_credentials_errors,
    unreachable_errors,
)


def test_with_botocore_loaded_the_classes_the_reader_always_caught() -> None:
    assert connection_errors() == (
        botocore.exceptions.HTTPClientError, botocore.exceptions.IncompleteReadError,
        botocore.exceptions.ChecksumError, botocore.parsers.ResponseParserError,
        urllib3.exceptions.HTTPError, ConnectionError)
    assert unreachable_errors() == (botocore.exceptions.EndpointConnectionError,
                                    botocore.exceptions.ConnectTimeoutError)
    assert client_errors() == (botocore.exceptions.ClientError,)
    assert no_credentials_errors() == (botocore.exceptions.NoCredentialsError,)


# In a fresh interpreter: the read path's modules load no botocore or urllib3; the lookups
# then name only ConnectionError; an error answer of the fast transport loads botocore's
# exceptions, and from then on its ClientError is caught (urllib3 still not loaded).
_FRESH = """
import sys
from featurepull.dynamo import reader, scan, transport
from featurepull.dynamo._aws_errors import *

def foreign():
    return sorted(m for m in sys.modules if m.split(".")[0] in ("botocore", "urllib3"))

assert foreign() == [], foreign()
assert connection_errors() == (ConnectionError,), connection_errors()
assert (unreachable_errors(), client_errors(), no_credentials_errors()) == ((), (), ())
assert foreign() == [], foreign()
error = transport._error_answer(400, {}, b'{"__type": "x#ThrottlingException", "message": "m"}')
try:
    raise error
except client_errors() as caught:
    assert caught.response["Error"]["Code"] == "ThrottlingException"
assert "botocore.exceptions" in foreign() and "urllib3" not in foreign(), foreign()
assert len(connection_errors()) == 4 and len(unreachable_errors()) == 2
print("ok")
"""


def test_before_botocore_is_loaded_none_of_its_classes_and_no_import() -> None:
    proc = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
