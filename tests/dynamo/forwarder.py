"""A TCP forwarder (asyncio, in a thread of the test process) in front of an endpoint: counts
the connections it accepted, can close them all (a server closing idle connections), and
with an SSL context terminates TLS (tests/dynamo/test_tls.py)."""

from __future__ import annotations

import asyncio
import ssl
import threading


class Forwarder:
    """Accepts on 127.0.0.1 (TLS with ``context``) and forwards the plain bytes to
    ``upstream`` (``http://HOST:PORT``)."""

    def __init__(self, upstream: str, context: ssl.SSLContext | None = None) -> None:
        host, port = upstream.removeprefix("http://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.context = context
        self.accepted = 0  # connections (with TLS: handshakes)
        self._writers: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    @property
    def url(self) -> str:
        return f"{'https' if self.context else 'http'}://127.0.0.1:{self.port}"

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(
            self._serve, "127.0.0.1", 0, ssl=self.context))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()
        server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.discard(writer)

    def close_all(self) -> None:
        """Close every connection accepted (a FIN to each client); return once done."""
        async def close() -> None:
            for writer in list(self._writers):
                writer.close()
            await asyncio.gather(*(w.wait_closed() for w in self._writers),
                                 return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)

    def stop(self) -> None:
        async def end() -> None:
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(end(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
