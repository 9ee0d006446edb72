"""A network between the worker and its services that the fault suite controls.

The worker runs in a network namespace of the suite's own (``ip netns add``),
whose only way out is a veth pair to this host. Its services (PostgreSQL,
RabbitMQ, Redis, the SMTP server) are reached through the host end of the pair,
where a TCP relay of this module forwards each connection to the service on
127.0.0.1. The suite then breaks the link:

- **partition**: the host end of the veth pair is set down, so every packet
  between the worker and every service is dropped (TCP retransmits, new
  connections wait for their SYN to get through) until it is set up again;
- **delay**: the relay holds every chunk of data, in both directions, for a
  fixed time before passing it on (a slower network, the order of bytes kept).

This kernel has no ``sch_netem`` (``tc qdisc ... netem`` is refused), so a delay
is the relay's, not the kernel's; the partition is the kernel's own. Nothing here
leaves the machine: the namespace and the veth pair are made by :meth:`up` and
removed by :meth:`down`, and the relay only connects to 127.0.0.1. Needs root
(``ip netns``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from urllib.parse import urlsplit, urlunsplit

CHUNK = 65536


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def available() -> str | None:
    """None when this process may make network namespaces, else why not."""
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    probe = f"orion-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"ip netns add failed: {exc}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=30)
    return None


class NetworkLink:
    """A namespace ``orion-nf-<pid>`` linked to this host by a veth pair
    (10.213.N.1 on the host, 10.213.N.2 inside), and a relay on 10.213.N.1 for
    each of ``ports`` (TCP port numbers) to the same port on 127.0.0.1.
    ``delay_s`` is added to every chunk relayed (seconds, each direction)."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = sorted(set(ports))
        suffix = os.getpid() % 100000
        self.namespace = f"orion-nf-{suffix}"
        self.host_end, self.inner_end = f"onfh{suffix}", f"onfn{suffix}"
        subnet = suffix % 250 + 1
        self.host_address, self.inner_address = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
        self.delay_s = 0.0
        self.connections = 0  # relayed so far
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.Server] = []

    # -- the namespace and the link ------------------------------------------------
    def up(self) -> None:
        self.down()  # what a killed earlier run of this pid left
        _ip("netns", "add", self.namespace)
        _ip("link", "add", self.host_end, "type", "veth", "peer", "name", self.inner_end)
        _ip("link", "set", self.inner_end, "netns", self.namespace)
        _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_end)
        _ip("link", "set", self.host_end, "up")
        _ip("-n", self.namespace, "addr", "add", f"{self.inner_address}/30", "dev", self.inner_end)
        _ip("-n", self.namespace, "link", "set", self.inner_end, "up")
        _ip("-n", self.namespace, "link", "set", "lo", "up")
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True, name="netfault")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the network fault's relay did not start")

    def down(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._loop = None
        subprocess.run(["ip", "link", "del", self.host_end], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True, timeout=30)

    def partition(self, cut: bool) -> None:
        """Drop every packet between the namespace and the host (``cut``), or not."""
        _ip("link", "set", self.host_end, "down" if cut else "up")

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def address(self, url: str) -> str:
        """``url`` with a host of 127.0.0.1 or localhost turned into the relay's address."""
        parts = urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost"):
            return url
        netloc = parts.netloc.replace(parts.hostname, self.host_address, 1)
        return urlunsplit(parts._replace(netloc=netloc))

    # -- the relay -----------------------------------------------------------------
    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def start() -> None:
            for port in self.ports:
                server = await asyncio.start_server(
                    lambda r, w, port=port: self._relay(r, w, port), self.host_address, port
                )
                self._servers.append(server)

        loop.run_until_complete(start())
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _close(self) -> None:
        """Stop listening and end every relayed connection."""
        for server in self._servers:
            server.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for end in (writer, up_writer):  # either side's end or reset ends both
            end.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy ``reader`` to ``writer``, each chunk ``delay_s`` after it arrived
        (a queue, so a delay adds latency without limiting throughput)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                arrived, data = await queue.get()
                if not data:
                    break
                wait = arrived + self.delay_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(send())
        try:
            while not sender.done():
                data = await reader.read(CHUNK)
                await queue.put((time.monotonic(), data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()
            writer.close()
