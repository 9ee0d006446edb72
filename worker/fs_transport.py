"""kombu's filesystem transport, reading a queue without rescanning per message.

``kombu.transport.filesystem.Channel._get`` lists and sorts the whole shared
folder for every message it returns, then ``pop(0)``s through the list, and
lists it again for every poll of an empty queue: the cost of one read grows
with the backlog (quadratically, counting the pops). Under a replay burst the
backlog grew faster than the worker could read it and orders stalled. This
channel lists the folder once for all its queues, and again only when a queue
runs dry and at least ``RESCAN_SECONDS`` (or ten times the last listing's cost)
have passed; it hands out each queue's files in order.

kombu also creates a message file before writing it, and reads without waiting
for the writer, so a fast reader can take an empty file (seen here: a worker
died on it). This channel writes each message under a hidden name and renames
it into place, which readers see whole or not at all. Everything else (file
names, fanout through ``control_folder``) is kombu's.

Registered as the ``orionfs://`` transport (see ``register``); the embedded
default uses it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections import defaultdict, deque
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

SCHEME = "orionfs"


RESCAN_SECONDS = 0.02


class Channel(filesystem.Channel):
    """A filesystem channel that remembers the files it listed, per queue."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listed: dict[str, deque[str]] = {}
        self._next_scan = 0.0

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        for _ in range(2):
            listed = self._listed.get(queue)
            while listed:
                payload = self._take(listed.popleft())
                if payload is not None:
                    return loads(bytes_to_str(payload))
            if monotonic() < self._next_scan:
                break
            self._scan()
        raise Empty()

    def _scan(self) -> None:
        """List the folder once and file every message under its queue, oldest first."""
        began = monotonic()
        listed: dict[str, deque[str]] = defaultdict(deque)
        for name in self._scan_names():
            listed[name.partition(".")[2].removesuffix(".msg")].append(name)
        done = monotonic()
        # A large backlog makes a listing costly; scan less often, not more.
        self._listed, self._next_scan = listed, done + max(RESCAN_SECONDS, 10 * (done - began))

    def _take(self, filename: str) -> bytes | None:
        """Move the file out of the queue folder and read it; None if another process took it."""
        target = self.processed_folder if self.store_processed else tempfile.gettempdir()
        try:
            shutil.move(os.path.join(self.data_folder_in, filename), target)
        except OSError:
            return None
        path = os.path.join(target, filename)
        try:
            with open(path, "rb") as handle:
                payload = handle.read()
            if not self.store_processed:
                os.remove(path)
        except OSError as exc:
            raise ChannelError(f"Cannot read file {path!r} from queue.") from exc
        return payload

    # kombu's stubs call this argument ``message`` in AbstractChannel and ``payload`` in
    # filesystem.Channel, so no name satisfies both; kombu passes it by position.
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        """Write the message beside the queue folder's files, then rename it in (atomic)."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _scan_names(self) -> list[str]:
        return sorted(n for n in os.listdir(self.data_folder_in) if not n.startswith("."))

    def _purge(self, queue: str) -> int:
        self._listed.pop(queue, None)
        return super()._purge(queue)


class Transport(filesystem.Transport):
    Channel = Channel
    driver_type = "filesystem"
    driver_name = "orionfs"


def register() -> None:
    """Make ``orionfs://`` resolve to this transport in this process."""
    TRANSPORT_ALIASES.setdefault(SCHEME, f"{__name__}:Transport")
