#!/usr/bin/env python
"""Microseconds to SigV4-sign one BatchGetItem request: featurepull's signer
(``featurepull/dynamo/sigv4.py``) against botocore's, pure Python and — when ``awscrt`` is
installed, as ``pip install 'botocore[crt]'`` does — the CRT signer botocore then uses.

    .venv/bin/python scripts/bench_signer.py [--requests 5000] [--rounds 5]

Every signer signs the same 100-key BatchGetItem body (the fast transport's request shape)
with the same frozen credentials; botocore's signers sign an ``AWSRequest`` as botocore builds
it for a call (URL, method, the three headers, the body), and — "signing only" — one such
request signed again and again, which leaves out building it. Each round times ``--requests``
signatures per signer, signers interleaved; the median round is reported, with the ratio to
featurepull's signer. A read of 100,000 entities sends 1,000 requests, so µs per request is
also ms per 100,000 entities.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import botocore
import botocore.auth
import botocore.compat
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from featurepull.dynamo.sigv4 import PostSigner
from featurepull.dynamo.transport import CONTENT_TYPE, SIGNING_NAME, TARGET

HOST = "dynamodb.eu-west-1.amazonaws.com"
REGION = "eu-west-1"


def request_body(keys: int = 100) -> bytes:
    """A BatchGetItem body of ``keys`` Feast entity ids, as the fast transport sends it."""
    request = {"RequestItems": {"fraud.driver_stats": {
        "Keys": [{"entity_id": {"S": f"{i:032x}"}} for i in range(keys)],
        "ProjectionExpression": "#k, #t, #v.#f0, #v.#f1, #v.#f2",
        "ExpressionAttributeNames": {"#k": "entity_id", "#t": "event_ts", "#v": "values",
                                     "#f0": "conv_rate", "#f1": "acc_rate",
                                     "#f2": "avg_daily_trips"},
        "ConsistentRead": False}}, "ReturnConsumedCapacity": "TOTAL"}
    return json.dumps(request, separators=(",", ":")).encode()


def signers(body: bytes, credentials: Credentials) -> dict[str, Callable[[], object]]:
    """name → a call that signs one request."""
    frozen = credentials.get_frozen_credentials()
    ours = PostSigner(HOST, "/", REGION, SIGNING_NAME, CONTENT_TYPE, TARGET)

    def new_request() -> AWSRequest:
        return AWSRequest(method="POST", url=f"https://{HOST}/", data=body,
                          headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET})

    def botocore_signer(auth_class: type, prebuilt: bool) -> Callable[[], object]:
        """A fresh AWSRequest per call (what a transport on botocore's signer pays), or one
        request re-signed (add_auth replaces its signature headers): the signing alone."""
        auth = auth_class(credentials, SIGNING_NAME, REGION)
        kept = new_request()

        def sign() -> object:
            request = kept if prebuilt else new_request()
            auth.add_auth(request)
            return request.headers["Authorization"]

        return sign

    classes = {"SigV4Auth (pure Python)": botocore.auth.SigV4Auth}
    if botocore.compat.HAS_CRT:
        from botocore.crt.auth import CrtSigV4Auth

        classes["CrtSigV4Auth (awscrt)"] = CrtSigV4Auth
    found: dict[str, Callable[[], object]] = {
        "featurepull PostSigner": lambda: ours.sign(body, frozen)}
    for name, auth_class in classes.items():
        found[f"botocore {name}"] = botocore_signer(auth_class, prebuilt=False)
        found[f"botocore {name}, signing only"] = botocore_signer(auth_class, prebuilt=True)
    return found


def measure(calls: dict[str, Callable[[], object]], requests: int,
            rounds: int) -> dict[str, float]:
    """Median µs per signature of each signer over ``rounds`` interleaved rounds."""
    timings: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            for _ in range(requests):
                call()
            timings[name].append((time.perf_counter() - started) / requests * 1e6)
    return {name: statistics.median(values) for name, values in timings.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    body = request_body()
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                              "session-token")
    medians = measure(signers(body, credentials), args.requests, args.rounds)
    base = medians["featurepull PostSigner"]
    print(f"botocore {botocore.__version__}, awscrt installed: {botocore.compat.HAS_CRT}, "
          f"body {len(body)} bytes, {args.requests} requests x {args.rounds} rounds (median)")
    print(f"{'signer':50} {'µs/request':>11} {'ratio':>7}")
    for name, micros in medians.items():
        print(f"{name:50} {micros:11.1f} {micros / base:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
