#!/usr/bin/env python
"""Where a BatchGetItem's round trip goes: each request timed on the client (written, first
byte back, complete, its task resumed) and on the bench endpoint (received, answer
scheduled, latency timer fired, answer written), joined by the answer's request id.

    .venv/bin/python scripts/bench_round_trips.py [--keys 100000] [--readers 1] \\
        [--in-flight 32] [--latency-ms 10] [--layer reader|pool]

Both sides stamp ``time.monotonic()`` (one clock for every process of the machine). The
endpoint is the bench's own, run with its connection class wrapped. Prints, per step, the
mean and percentiles in ms, and how much of the ``in-flight`` slots' time no request was on
the wire (``idle``: a slot between an answer and the next request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
STEPS = (
    ("up", "client wrote -> endpoint received", "ep_recv", "write"),
    ("handle", "endpoint received -> answer made", "ep_sched", "ep_recv"),
    ("latency", "answer made -> due (configured)", "ep_due", "ep_sched"),
    ("late", "due -> latency timer ran it", "ep_fire", "ep_due"),
    ("send", "timer ran it -> written", "ep_sent", "ep_fire"),
    ("down", "endpoint wrote -> client's first byte", "data", "ep_sent"),
    ("parse", "first byte -> response complete", "complete", "data"),
    ("resume", "complete -> request task resumed", "resumed", "complete"),
    ("checkout", "pool asked -> written", "write", "asked"),
    ("round trip", "client wrote -> task resumed", "resumed", "write"),
)


# ----------------------------------------------------------------------------- endpoint
def serve(out: str, argv: list[str]) -> None:
    """The bench endpoint, each answer's times recorded and written to ``out`` at exit."""
    from featurepull.bench import endpoint as ep

    records: list[list[float]] = []
    now = time.monotonic
    Conn, Latency = ep._Connection, ep._Latency
    data_received, send, send_later = Conn.data_received, Conn._send, Conn._send_later
    call_later = Latency.call_later

    def p_data_received(self: Any, data: bytes) -> None:
        if getattr(self, "p_recv", None) is None:
            self.p_recv = now()
        data_received(self, data)

    def p_call_later(self: Any, callback: Any) -> None:
        conn = callback.func.__self__
        conn.p_sched = now()
        conn.p_due = asyncio.get_running_loop().time() + self.latency_s
        call_later(self, callback)

    def p_send_later(self: Any, *args: Any) -> None:
        self.p_fire = now()
        send_later(self, *args)

    def p_send(self: Any, *args: Any) -> None:
        send(self, *args)
        if getattr(self, "p_recv", None) is not None and hasattr(self, "p_fire"):
            records.append([self.server.sent, self.p_recv, self.p_sched, self.p_due,
                            self.p_fire, now()])
        self.p_recv = None

    Conn.data_received, Conn._send, Conn._send_later = p_data_received, p_send, p_send_later
    Latency.call_later = p_call_later
    try:
        ep.main(argv)
    finally:
        Path(out).write_text(json.dumps(records))


# ------------------------------------------------------------------------------- client
def instrument_client(records: list[dict[str, Any]]) -> None:
    from featurepull.dynamo import http

    now = time.monotonic
    Conn = http._Connection
    data_received, complete = Conn.data_received, Conn._complete

    def p_data_received(self: Any, data: bytes) -> None:
        record = getattr(self, "p_record", None)
        if record is not None and "data" not in record:
            record["data"] = now()
        data_received(self, data)

    def p_complete(self: Any) -> None:
        record = getattr(self, "p_record", None)
        if record is not None and "complete" not in record:
            record["complete"] = now()
        complete(self)

    Conn.data_received, Conn._complete = p_data_received, p_complete
    if hasattr(http.ConnectionPool, "start"):
        _instrument_callbacks(records, http)
        return
    exchange = Conn.exchange

    async def p_exchange(self: Any, request: bytes, timeout: float) -> Any:
        record: dict[str, Any] = {"write": now()}
        self.p_record = record
        response = await exchange(self, request, timeout)
        record["resumed"] = now()
        record["id"] = int(response.headers["x-amzn-requestid"].rpartition("-")[2])
        records.append(record)
        return response

    Conn.exchange = p_exchange
    pool_request = http.ConnectionPool.request

    async def p_request(self: Any, raw: bytes) -> Any:
        asked = now()
        response = await pool_request(self, raw)
        records[-1]["asked"] = asked
        return response

    http.ConnectionPool.request = p_request


def _instrument_callbacks(records: list[dict[str, Any]], http: Any) -> None:
    """Trees whose pool writes a request at once and calls back with its response
    (``ConnectionPool.start``, ``_Connection.send``): "resumed" is the callback's start, where
    the reader takes the answer; "asked" the pool's start (the write itself, for a request
    that waited for its connection)."""
    now = time.monotonic
    Conn, Pool = http._Connection, http.ConnectionPool
    send, start = Conn.send, Pool.start
    asking: dict[str, float | None] = {"at": None}

    def p_start(self: Any, raw: bytes, on_response: Any) -> None:
        asking["at"] = now()
        try:
            start(self, raw, on_response)
        finally:
            asking["at"] = None

    def p_send(self: Any, request: bytes, timeout: float, on_response: Any) -> None:
        written = now()
        record: dict[str, Any] = {"write": written, "asked": asking["at"] or written}
        self.p_record = record

        def p_on_response(outcome: Any) -> None:
            record["resumed"] = now()
            if isinstance(outcome, http.Response):
                record["id"] = int(outcome.headers["x-amzn-requestid"].rpartition("-")[2])
                records.append(record)
            on_response(outcome)

        send(self, request, timeout, p_on_response)

    Conn.send, Pool.start = p_send, p_start


def client(url: str, keys: int, found_share: float, in_flight: int, layer: str,
           out: str) -> None:
    """One reading process: ``keys`` keys read at ``in_flight``, records to ``out``."""
    os.environ.update(AWS_ENV)
    from featurepull.bench.endpoint import DEFAULT_TABLE, FEATURES
    from featurepull.config import DynamoSettings
    from featurepull.dynamo.layouts import FeastLayout
    from featurepull.dynamo.reader import BatchReader

    records: list[dict[str, Any]] = []
    instrument_client(records)
    layout = FeastLayout({"driver_id": "int64"})
    ids = list(range(keys))
    random.Random(os.getpid()).shuffle(ids)
    entity_ids = layout.keys_for({"driver_id": ids})
    settings = DynamoSettings(endpoint_url=url, region="us-east-1", max_read_workers=in_flight)
    reader = BatchReader(DEFAULT_TABLE, layout, settings)
    reader.check_table()
    del records[:]
    started = time.monotonic()
    if layer == "reader":
        reader.read(entity_ids, list(FEATURES), positions=range(keys))
    else:
        import orjson
        from bench_requests import _fan_out  # type: ignore[import-not-found]

        from featurepull.dynamo.transport import FastTransport

        async def pool_only() -> None:
            transport = FastTransport(reader.client, settings, base64_values=True)
            template = {**layout.projection(list(FEATURES)), "ConsistentRead": False}
            body = orjson.dumps({"RequestItems": {DEFAULT_TABLE: {
                **template, "Keys": layout.wire_keys_json(entity_ids[:100])}},
                "ReturnConsumedCapacity": "TOTAL"})
            raw = transport._request_bytes(body)
            await _fan_out(range(0, keys, 100), in_flight, lambda _: transport.pool.request(raw))
            transport.close()

        asyncio.run(pool_only())
    wall = time.monotonic() - started
    Path(out).write_text(json.dumps({"wall": wall, "started": started, "records": records}))


# --------------------------------------------------------------------------------- main
def _percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    at = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return {"mean": statistics.fmean(values), "p10": at(0.1), "p50": at(0.5), "p90": at(0.9),
            "p99": at(0.99), "max": values[-1]}


def start_server(args: argparse.Namespace, work: Path, endpoint_tree: str | None
                 ) -> tuple[subprocess.Popen[bytes], str]:
    """The recording endpoint (``endpoint_tree``'s featurepull, else this one's)."""
    from featurepull.bench.endpoint import _await_listening

    drivers = max(1, int(args.keys * args.found_share))
    env = {**os.environ, **AWS_ENV}
    if endpoint_tree:
        env["PYTHONPATH"] = str(Path(endpoint_tree).resolve())
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(work / "endpoint.json"), "--port", "0",
         "--drivers", str(drivers), "--latency-ms", str(args.latency_ms)],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    return server, _await_listening(server, 120.0)


def measure(args: argparse.Namespace, tree: str | None, endpoint_tree: str | None
            ) -> dict[str, Any]:
    """One run: a fresh recording endpoint, ``args.readers`` reading processes of ``tree``."""
    work = Path(tempfile.mkdtemp(prefix="featurepull-rtt-"))
    ep_out = work / "endpoint.json"
    env = {**os.environ, **AWS_ENV}
    if tree:
        env["PYTHONPATH"] = str(Path(tree).resolve())
    server, url = start_server(args, work, endpoint_tree)
    try:
        outs = [work / f"client{n}.json" for n in range(args.readers)]
        clients = [subprocess.Popen(
            [sys.executable, __file__, "--client", str(out), "--url", url, "--keys",
             str(args.keys), "--found-share", str(args.found_share), "--in-flight",
             str(args.in_flight), "--layer", args.layer], env=env) for out in outs]
        for proc in clients:
            proc.wait()
    finally:
        server.terminate()
        server.wait()
    served = {row[0]: row[1:] for row in json.loads(ep_out.read_text())}
    joined: list[dict[str, float]] = []
    walls = []
    idle = []
    idle_phases: dict[str, list[float]] = {}
    for out in outs:
        run = json.loads(out.read_text())
        walls.append(run["wall"])
        busy = 0.0
        events = sorted([(r["write"], 1) for r in run["records"]]
                        + [(r["resumed"], -1) for r in run["records"]])
        writes = sorted(r["write"] for r in run["records"])
        full_at, last_write = writes[min(len(writes), args.in_flight) - 1], writes[-1]
        end = run["started"] + run["wall"]
        phases = {"head": 0.0, "middle": 0.0, "tail": 0.0}
        level, at = 0, run["started"]
        for t, step in [*events, (end, 0)]:
            phase = "head" if at < full_at else "tail" if at >= last_write else "middle"
            phases[phase] += (args.in_flight - level) * (t - at)
            level, at = level + step, t
        for name, value in phases.items():
            idle_phases.setdefault(name, []).append(round(value * 1000 / len(writes), 3))
        for record in run["records"]:
            recv, sched, due, fire, sent = served[record["id"]]
            joined.append({**record, "ep_recv": recv, "ep_sched": sched, "ep_due": due,
                           "ep_fire": fire, "ep_sent": sent})
            busy += record["resumed"] - record["write"]
        idle.append((run["wall"] * args.in_flight - busy) / len(run["records"]))
    steps = {name: _percentiles([(r[end] - r[start]) * 1000 for r in joined])
             for name, _, end, start in STEPS}
    return {"keys": args.keys, "readers": args.readers, "in_flight": args.in_flight,
            "layer": args.layer, "latency_ms": args.latency_ms, "requests": len(joined),
            "wall_s": [round(w, 3) for w in walls],
            "floor_s": round(args.keys / 100 / args.in_flight * args.latency_ms / 1000, 4),
            "idle_ms_per_request": [round(i * 1000, 3) for i in idle],
            "idle_phases_ms_per_request": idle_phases,
            "steps_ms": steps, "load_average": os.getloadavg()[0]}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve"]:
        serve(argv[1], argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client")
    parser.add_argument("--url")
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--found-share", type=float, default=0.1)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=10.0)
    parser.add_argument("--readers", type=int, default=1)
    parser.add_argument("--layer", choices=("reader", "pool"), default="reader")
    parser.add_argument("--json-out", default="bench-output/round-trips.json")
    parser.add_argument("--tree", action="append", type=lambda s: tuple(s.split("=", 1)),
                        help="NAME=DIR: the readers run DIR's featurepull (repeat; "
                        "interleaved by round)")
    parser.add_argument("--endpoint-tree", help="DIR whose bench endpoint answers "
                        "(default: this one's)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    if args.client:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        client(args.url, args.keys, args.found_share, args.in_flight, args.layer, args.client)
        return 0
    trees = args.tree or [("this", None)]
    runs = []
    for round_no in range(args.rounds):
        for name, tree in (trees if round_no % 2 == 0 else trees[::-1]):
            result = {"tree": name, "round": round_no, **measure(args, tree, args.endpoint_tree)}
            runs.append(result)
            print_run(result)
    if len(runs) > 1:
        print(summary(runs, trees, args.rounds))
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(runs, indent=1))
    return 0


def summary(runs: list[dict[str, Any]], trees: Sequence[tuple[str, str | None]],
            rounds: int) -> str:
    """Medians by tree: wall, mean round trip, the endpoint's lateness, idle slots."""
    fields: dict[str, Any] = {
        "wall s": lambda r: statistics.fmean(r["wall_s"]),
        "round trip ms": lambda r: r["steps_ms"]["round trip"]["mean"],
        "late ms": lambda r: r["steps_ms"]["late"]["mean"],
        **{f"idle {phase} ms": (lambda r, p=phase: statistics.fmean(
            r["idle_phases_ms_per_request"][p])) for phase in ("head", "middle", "tail")},
    }
    lines = [f"medians over {rounds} round(s); idle: ms per request of slots with no request "
             "on the wire", f"{'tree':<10}" + "".join(f"{name:>15}" for name in fields)]
    for name, _ in trees:
        mine = [r for r in runs if r["tree"] == name]
        lines.append(f"{name:<10}" + "".join(
            f"{statistics.median(get(r) for r in mine):15.3f}" for get in fields.values()))
    return "\n".join(lines)


def print_run(result: dict[str, Any]) -> None:
    print(f"[{result['tree']} round {result['round']}] {result['readers']} reader(s) x "
          f"{result['in_flight']} in flight, {result['keys']:,} keys each, layer "
          f"{result['layer']}; wall {result['wall_s']} s (floor {result['floor_s']}), slot "
          f"idle per request {result['idle_ms_per_request']} ms (by phase "
          f"{result['idle_phases_ms_per_request']}), load {result['load_average']:.1f}")
    print(f"{'step':<11} {'what':<40} {'mean':>6} {'p10':>6} {'p50':>6} {'p90':>6} "
          f"{'p99':>6} {'max':>6}")
    for name, what, _, _ in STEPS:
        s = result["steps_ms"][name]
        print(f"{name:<11} {what:<40} " + " ".join(
            f"{s[k]:6.2f}" for k in ("mean", "p10", "p50", "p90", "p99", "max")))


if __name__ == "__main__":
    raise SystemExit(main())
