"""One endpoint's durable, bounded queue of events on local disk.

The directory holds segment files of JSON lines, one event per line, named by the sequence number of
their first event (`00000000000000000042.events`), and `cursor`, the sequence number of the next
event to deliver. Appends go to the last segment; a segment is deleted once every event in it has
been delivered or dropped. Beyond `limit` undelivered events the oldest are dropped. On open, a line
torn by a crash in the middle of a write is cut off, so a restart delivers every complete event
that was not acknowledged (at least once, in order).

Written through aiofiles, so that the event loop never waits on the disk. Appends are not fsynced:
events survive the process (a crash, SIGKILL, a restart), not the loss of the machine's power.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from typing import IO, Any, Sequence

import aiofiles
import aiofiles.os

SEGMENT_EVENTS = 1000
SUFFIX = ".events"
CURSOR = "cursor"
LOCK = "lock"


class SpoolLocked(Exception):
    """Another process uses the directory."""


def lock_directory(directory: str) -> IO[bytes]:
    """Take the directory for this process; the lock goes with the process, however it ends."""
    os.makedirs(directory, exist_ok=True)
    handle = open(os.path.join(directory, LOCK), "ab")  # noqa: SIM115 (held open for the process's life)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SpoolLocked(directory) from None
    return handle


class Spool:
    def __init__(self, directory: str, limit: int) -> None:
        self.directory = directory
        self.limit = limit
        self.segments: list[int] = []  # first sequence number of each segment file, ascending
        self.cursor = 0  # the next event to deliver
        self.next_seq = 0  # the sequence number the next appended event gets
        self._appender: Any = None  # the last segment, open for appending
        self._appended_lines = 0  # lines in the last segment
        self._reader: Any = None
        self._reader_segment = -1
        self._reader_seq = -1  # the sequence number of the line the reader reads next
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()  # the cursor, its file and the reader

    @property
    def pending(self) -> int:
        return self.next_seq - self.cursor

    def _path(self, first: int) -> str:
        return os.path.join(self.directory, f"{first:020d}{SUFFIX}")

    async def open(self) -> None:
        """Recover the state a previous process left."""
        names = await aiofiles.os.listdir(self.directory)
        self.segments = sorted(int(name[:-len(SUFFIX)]) for name in names
                               if name.endswith(SUFFIX) and name[:-len(SUFFIX)].isdigit())
        cursor = await self._read_cursor()
        if self.segments:
            last = self.segments[-1]
            self._appended_lines = await self._complete_lines(self._path(last))
            self.next_seq = last + self._appended_lines
            cursor = self.segments[0] if cursor is None else cursor
        else:
            self.next_seq = cursor or 0
            cursor = self.next_seq
        self.cursor = min(max(cursor, self.segments[0] if self.segments else cursor), self.next_seq)
        await self._delete_consumed()
        if self.pending:
            self._ready.set()

    async def _read_cursor(self) -> int | None:
        try:
            async with aiofiles.open(os.path.join(self.directory, CURSOR), "rb") as f:
                text = (await f.read()).decode("ascii", "replace").strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    @staticmethod
    async def _complete_lines(path: str) -> int:
        """Lines in a segment, after cutting off a last line a crash left unfinished."""
        async with aiofiles.open(path, "r+b") as f:
            data = await f.read()
            end = data.rfind(b"\n") + 1
            if end != len(data):
                await f.truncate(end)
        return data.count(b"\n", 0, end)

    async def append(self, lines: Sequence[bytes]) -> int:
        """Queue events (each one JSON line without its newline); how many old ones were dropped."""
        position = 0
        while position < len(lines):
            if self._appender is None or self._appended_lines >= SEGMENT_EVENTS:
                await self._rotate()
            room = SEGMENT_EVENTS - self._appended_lines
            batch = lines[position:position + room]
            await self._appender.write(b"".join(line + b"\n" for line in batch))
            self._appended_lines += len(batch)
            self.next_seq += len(batch)
            position += len(batch)
        dropped = 0
        if self.pending > self.limit:
            async with self._lock:
                dropped = max(self.pending - self.limit, 0)
                if dropped:
                    await self._advance(self.next_seq - self.limit)
        if self.pending:
            self._ready.set()
        return dropped

    async def _rotate(self) -> None:
        if self._appender is not None:
            await self._appender.close()
        if not self.segments or self._appended_lines >= SEGMENT_EVENTS:
            self.segments.append(self.next_seq)
            self._appended_lines = 0
        self._appender = await aiofiles.open(self._path(self.segments[-1]), "ab", buffering=0)

    async def next(self) -> tuple[int, bytes]:
        """The oldest undelivered event (its sequence number and line), waiting for one."""
        while not self.pending:
            self._ready.clear()
            await self._ready.wait()
        async with self._lock:  # a drop may move the cursor and delete segments meanwhile
            seq = self.cursor
            if self._reader is None or self._reader_seq != seq:
                await self._seek(seq)
            line = await self._reader.readline()
            self._reader_seq += 1
        return seq, line.rstrip(b"\n")

    async def _seek(self, seq: int) -> None:
        first = max(s for s in self.segments if s <= seq)
        if self._reader is None or self._reader_segment != first or self._reader_seq > seq:
            if self._reader is not None:
                await self._reader.close()
            self._reader = await aiofiles.open(self._path(first), "rb")
            self._reader_segment, self._reader_seq = first, first
        while self._reader_seq < seq:
            await self._reader.readline()
            self._reader_seq += 1

    async def ack(self, seq: int) -> None:
        """The event was delivered: the cursor moves past it (never back, if it was dropped meanwhile)."""
        async with self._lock:
            if seq + 1 > self.cursor:
                await self._advance(seq + 1)

    async def _advance(self, cursor: int) -> None:
        self.cursor = cursor
        temporary = os.path.join(self.directory, CURSOR + ".tmp")
        async with aiofiles.open(temporary, "wb") as f:
            await f.write(f"{cursor}\n".encode())
        await aiofiles.os.replace(temporary, os.path.join(self.directory, CURSOR))
        await self._delete_consumed()

    async def _delete_consumed(self) -> None:
        """Segments whose every event is before the cursor (the last one stays, for appending)."""
        while len(self.segments) > 1 and self.segments[1] <= self.cursor:
            first = self.segments.pop(0)
            if self._reader_segment == first and self._reader is not None:
                await self._reader.close()
                self._reader, self._reader_segment, self._reader_seq = None, -1, -1
            await aiofiles.os.remove(self._path(first))

    async def close(self) -> None:
        for handle in (self._appender, self._reader):
            if handle is not None:
                await handle.close()
        self._appender = self._reader = None
