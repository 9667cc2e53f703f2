"""The byte-store contract of storage_backends/base.py, run against every backend.

This is the one place the storage is tested below the HTTP layer: the registry
relies on these guarantees (atomic replace, invisible uncommitted writes,
resumable appends, sorted listings) and a backend that breaks one corrupts
repositories in ways the HTTP tests only see indirectly.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Awaitable, Callable

import pytest

from storage_backends import FileInfo, InvalidPath, PathNotFound, StorageBackend, StorageError

MiB = 1 << 20


def payload(size: int, seed: int) -> bytes:
    """Distinct, reproducible content, so a misplaced byte range cannot compare equal."""
    return random.Random(seed).randbytes(size)


async def read_all(backend: StorageBackend, path: str, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in backend.read(path, offset, length)])


async def write_chunked(backend: StorageBackend, path: str, chunks: list[bytes], append: bool = False) -> int:
    writer = await backend.writer(path, append=append)
    for chunk in chunks:
        await writer.write(chunk)
    await writer.commit()
    return writer.size


# --- read ---------------------------------------------------------------------------------------

SMALL = b"0123456789abcdefghij"


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, None, SMALL),
        (5, None, SMALL[5:]),
        (5, 4, SMALL[5:9]),
        (0, len(SMALL), SMALL),
        (15, 100, SMALL[15:]),  # length past the end is clipped
        (len(SMALL) - 1, None, SMALL[-1:]),
        (len(SMALL), None, b""),  # offset exactly at the end
        (len(SMALL) + 7, None, b""),  # offset beyond the end
        (len(SMALL) + 7, 3, b""),
        (0, 0, b""),
        (10, 0, b""),
    ],
)
async def test_read_range(backend: StorageBackend, offset: int, length: int | None, expected: bytes) -> None:
    await backend.write_bytes("r/small", SMALL)
    assert await read_all(backend, "r/small", offset, length) == expected


async def test_read_large_multi_chunk_file(backend: StorageBackend) -> None:
    """Several MiB so that every backend crosses its internal chunk boundaries."""
    data = payload(5 * MiB + 123, seed=1)
    await backend.write_bytes("r/large", data)
    assert await read_all(backend, "r/large") == data
    for offset, length in [
        (MiB - 7, 2 * MiB + 13),  # straddles two boundaries
        (MiB, MiB),  # exactly one aligned MiB
        (3 * MiB + 5, None),  # tail
        (len(data) - 10, MiB),  # clipped at the end
        (0, 4 * MiB + 1),
    ]:
        end = len(data) if length is None else offset + length
        assert await read_all(backend, "r/large", offset, length) == data[offset:end], (offset, length)


async def test_read_large_file_written_in_chunks(backend: StorageBackend) -> None:
    chunks = [payload(size, seed=i) for i, size in enumerate([MiB + 1, 3, 2 * MiB - 1, 700_000, MiB])]
    data = b"".join(chunks)
    assert await write_chunked(backend, "r/chunked", chunks) == len(data)
    assert await read_all(backend, "r/chunked") == data
    assert await read_all(backend, "r/chunked", 2 * MiB, 10) == data[2 * MiB:2 * MiB + 10]
    assert (await backend.stat("r/chunked")).size == len(data)


async def test_read_empty_file(backend: StorageBackend) -> None:
    await backend.write_bytes("r/empty", b"")
    assert await read_all(backend, "r/empty") == b""
    assert await backend.read_bytes("r/empty") == b""


async def test_read_missing_raises_path_not_found(backend: StorageBackend) -> None:
    with pytest.raises(PathNotFound):
        await read_all(backend, "r/missing")
    await backend.write_bytes("r/file", b"x")
    with pytest.raises(PathNotFound):
        await read_all(backend, "r/file/below-a-file")


async def test_read_directory_raises_path_not_found(backend: StorageBackend) -> None:
    await backend.write_bytes("r/dir/file", b"x")
    with pytest.raises(PathNotFound):
        await read_all(backend, "r/dir")
    with pytest.raises(PathNotFound):
        await backend.read_bytes("r/dir")


# --- read_bytes / write_bytes -------------------------------------------------------------------


async def test_read_bytes_returns_whole_content(backend: StorageBackend) -> None:
    data = payload(70_000, seed=2)
    await backend.write_bytes("b/blob", data)
    got = await backend.read_bytes("b/blob")
    assert isinstance(got, bytes)
    assert got == data


async def test_read_bytes_missing_raises_path_not_found(backend: StorageBackend) -> None:
    with pytest.raises(PathNotFound):
        await backend.read_bytes("b/missing")


async def test_write_bytes_creates_parent_directories(backend: StorageBackend) -> None:
    await backend.write_bytes("w/a/b/c/link", b"sha256:abc")
    assert await backend.read_bytes("w/a/b/c/link") == b"sha256:abc"
    assert (await backend.stat("w/a/b")).is_dir


async def test_write_bytes_replaces_content_entirely(backend: StorageBackend) -> None:
    """A shorter replacement must not leave the old tail behind."""
    await backend.write_bytes("w/link", b"a much longer original content")
    await backend.write_bytes("w/link", b"short")
    assert await backend.read_bytes("w/link") == b"short"
    assert (await backend.stat("w/link")).size == 5
    await backend.write_bytes("w/link", b"")
    assert await backend.read_bytes("w/link") == b""


async def test_write_bytes_leaves_no_stray_entries(backend: StorageBackend) -> None:
    """The temporary file of an atomic replace must not show up as a child."""
    for i in range(3):
        await backend.write_bytes("w/dir/link", f"v{i}".encode())
    assert await backend.list("w/dir") == ["link"]


async def test_concurrent_write_bytes_and_reads_see_whole_versions(backend: StorageBackend) -> None:
    versions = [payload(1000 + i, seed=100 + i) for i in range(20)]
    await backend.write_bytes("w/hot", versions[0])
    seen: list[bytes] = []

    async def reader() -> None:
        for _ in range(20):
            seen.append(await backend.read_bytes("w/hot"))
            await asyncio.sleep(0)

    await asyncio.gather(*(backend.write_bytes("w/hot", v) for v in versions), reader(), reader())
    assert all(s in versions for s in seen)
    assert await backend.read_bytes("w/hot") in versions


# --- writer (replace) ---------------------------------------------------------------------------


async def test_writer_invisible_until_commit(backend: StorageBackend) -> None:
    await backend.write_bytes("wr/sibling", b"keeps the directory listable")
    writer = await backend.writer("wr/new")
    assert writer.size == 0
    await writer.write(b"hello ")
    await writer.write(b"world")
    assert writer.size == 11
    assert not await backend.exists("wr/new")
    with pytest.raises(PathNotFound):
        await backend.read_bytes("wr/new")
    with pytest.raises(PathNotFound):
        await backend.stat("wr/new")
    assert await backend.list("wr") == ["sibling"]

    await writer.commit()
    assert writer.size == 11
    assert await backend.read_bytes("wr/new") == b"hello world"
    assert (await backend.stat("wr/new")).size == 11
    assert await backend.list("wr") == ["new", "sibling"]


async def test_writer_keeps_old_content_until_commit_then_replaces(backend: StorageBackend) -> None:
    await backend.write_bytes("wr/existing", b"old content that is longer")
    writer = await backend.writer("wr/existing")
    assert writer.size == 0  # a replacing writer does not count the old bytes
    await writer.write(b"new")
    assert await backend.read_bytes("wr/existing") == b"old content that is longer"
    await writer.commit()
    assert writer.size == 3
    assert await backend.read_bytes("wr/existing") == b"new"


async def test_writer_cancel_leaves_nothing(backend: StorageBackend) -> None:
    await backend.write_bytes("wr/sibling", b"x")
    writer = await backend.writer("wr/cancelled")
    await writer.write(payload(100_000, seed=3))
    await writer.cancel()
    assert not await backend.exists("wr/cancelled")
    assert await backend.list("wr") == ["sibling"]


async def test_writer_cancel_keeps_previous_content(backend: StorageBackend) -> None:
    await backend.write_bytes("wr/kept", b"previous")
    writer = await backend.writer("wr/kept")
    await writer.write(b"replacement")
    await writer.cancel()
    assert await backend.read_bytes("wr/kept") == b"previous"


async def test_writer_with_no_writes_commits_empty_file(backend: StorageBackend) -> None:
    writer = await backend.writer("wr/empty")
    await writer.commit()
    assert writer.size == 0
    assert await backend.read_bytes("wr/empty") == b""
    assert not (await backend.stat("wr/empty")).is_dir


@pytest.mark.parametrize("sized", [False, True], ids=["unsized", "sized"])
async def test_unfinished_writes_are_named_until_they_end_and_aborting_them_leaves_nothing(
        backend: StorageBackend, sized: bool) -> None:
    """What unfinished_writes() names, a registry's heartbeat records, so that a successor can abort_writes()
    what a killed process left outside any file (S3 multipart uploads, registry/incoming.py). Nothing is
    named once a writer committed or cancelled; an aborted write can no longer commit, and leaves nothing."""
    data = payload(12 << 20, seed=5)  # beyond S3's part size
    finished = await backend.writer("uw/finished", size=len(data) if sized else None)
    await finished.write(data)
    await finished.commit()
    assert backend.unfinished_writes() == []
    abandoned = await backend.writer("uw/abandoned", size=len(data) if sized else None)
    await abandoned.write(data)
    named = backend.unfinished_writes()
    assert all(isinstance(token, str) for token in named)
    await backend.abort_writes(named)
    if named:
        with pytest.raises(StorageError):
            await abandoned.commit()
    else:
        await abandoned.cancel()
    assert backend.unfinished_writes() == []
    assert not await backend.exists("uw/abandoned")
    assert await backend.read_bytes("uw/finished") == data


# --- writer (append) ----------------------------------------------------------------------------


async def test_append_writer_appends_to_existing(backend: StorageBackend) -> None:
    await backend.write_bytes("ap/upload", b"first,")
    writer = await backend.writer("ap/upload", append=True)
    assert writer.size == 6
    await writer.write(b"second,")
    await writer.write(b"third")
    assert writer.size == 18
    await writer.commit()
    assert writer.size == 18
    assert await backend.read_bytes("ap/upload") == b"first,second,third"
    assert (await backend.stat("ap/upload")).size == 18

    # A later chunk (another PATCH) appends after everything committed so far.
    assert await write_chunked(backend, "ap/upload", [b"!"], append=True) == 19
    assert await backend.read_bytes("ap/upload") == b"first,second,third!"


async def test_append_writer_to_empty_scratch_file(backend: StorageBackend) -> None:
    """How uploads start: an empty scratch file, then appended chunks."""
    await backend.write_bytes("ap/scratch", b"")
    chunks = [payload(size, seed=10 + i) for i, size in enumerate([MiB + 3, 17, MiB])]
    for chunk in chunks:
        await write_chunked(backend, "ap/scratch", [chunk], append=True)
    assert await read_all(backend, "ap/scratch") == b"".join(chunks)


async def test_append_writer_to_missing_path_starts_empty(backend: StorageBackend) -> None:
    assert await write_chunked(backend, "ap/fresh", [b"abc", b"def"], append=True) == 6
    assert await backend.read_bytes("ap/fresh") == b"abcdef"


async def test_append_writer_cancel_truncates_to_original_size(backend: StorageBackend) -> None:
    original = payload(5000, seed=4)
    await backend.write_bytes("ap/interrupted", original)
    writer = await backend.writer("ap/interrupted", append=True)
    await writer.write(payload(300_000, seed=5))
    await writer.write(b"tail")
    await writer.cancel()
    assert await backend.read_bytes("ap/interrupted") == original
    assert (await backend.stat("ap/interrupted")).size == len(original)

    # The upload can resume from where it was.
    assert await write_chunked(backend, "ap/interrupted", [b"resumed"], append=True) == len(original) + 7
    assert await backend.read_bytes("ap/interrupted") == original + b"resumed"


@pytest.mark.parametrize("append", [False, True], ids=["replace", "append"])
async def test_on_write_receives_exactly_the_written_bytes_in_order(backend: StorageBackend, append: bool) -> None:
    """Uploads hash the stream through on_write; a lost, doubled or reordered chunk breaks digests."""
    await backend.write_bytes("ow/file", b"existing bytes are not passed to on_write")
    chunks = [payload(size, seed=20 + i) for i, size in enumerate([1, 65_536, 0, 3, MiB + 1, 10, 4096] * 3)]
    seen: list[bytes] = []
    writer = await backend.writer("ow/file", append=append)
    writer.on_write = lambda data: seen.append(bytes(data))
    for chunk in chunks:
        await writer.write(chunk)
    await writer.commit()
    assert b"".join(seen) == b"".join(chunks)


@pytest.mark.parametrize("append", [False, True], ids=["replace", "append"])
async def test_write_pieces_writes_them_in_order_as_one_stream(backend: StorageBackend, append: bool) -> None:
    """A request body reaches storage as lists of its parser's buffers: many tiny ones, empty ones, and
    enough bytes that the filesystem starts writing back on the way."""
    await backend.write_bytes("wp/file", b"kept,")
    batches = [[payload(7, seed=i) for i in range(1500)], [b"", payload(MiB + 1, seed=40), b""],
               [payload(3 * MiB, seed=41 + i) for i in range(3)], [payload(5, seed=50)]]
    stream = b"".join(b"".join(batch) for batch in batches)
    seen: list[bytes] = []
    writer = await backend.writer("wp/file", append=append)
    writer.on_write = lambda data: seen.append(bytes(data))
    for batch in batches:
        await writer.write_pieces(batch)
    assert writer.size == len(stream) + (5 if append else 0)
    await writer.commit()
    assert b"".join(seen) == stream
    assert await read_all(backend, "wp/file") == (b"kept," if append else b"") + stream


# --- stat ---------------------------------------------------------------------------------------


async def test_stat_file(backend: StorageBackend) -> None:
    before = time.time()
    await backend.write_bytes("st/file", b"12345")
    info = await backend.stat("st/file")
    assert isinstance(info, FileInfo)
    assert info.size == 5
    assert not info.is_dir
    # mtime is a Unix timestamp of about now (a generous window: a remote store's clock may differ).
    assert abs(info.mtime - before) < 300


async def test_stat_directory(backend: StorageBackend) -> None:
    await backend.write_bytes("st/dir/sub/file", b"x")
    assert (await backend.stat("st/dir")).is_dir
    assert (await backend.stat("st/dir/sub")).is_dir
    assert not (await backend.stat("st/dir/sub/file")).is_dir


async def test_stat_missing_raises_path_not_found(backend: StorageBackend) -> None:
    await backend.write_bytes("st/file", b"x")
    for path in ["st/missing", "nothing/here", "st/fil", "st/file/below"]:
        with pytest.raises(PathNotFound):
            await backend.stat(path)


# --- list ---------------------------------------------------------------------------------------


async def test_list_sorted_direct_children_with_directories(backend: StorageBackend) -> None:
    for path in ["ls/b", "ls/a", "ls/c/deep/file", "ls/C", "ls/a-dir/x", "ls2/not-a-child", "lsx"]:
        await backend.write_bytes(path, b"x")
    assert await backend.list("ls") == ["C", "a", "a-dir", "b", "c"]
    assert await backend.list("ls/c") == ["deep"]
    assert await backend.list("ls/c/deep") == ["file"]


async def test_list_missing_raises_path_not_found(backend: StorageBackend) -> None:
    await backend.write_bytes("ls/file", b"x")
    for path in ["ls/missing", "nothing", "l", "ls/file"]:
        with pytest.raises(PathNotFound):
            await backend.list(path)


# --- move ---------------------------------------------------------------------------------------


async def test_move_to_new_path_creates_parents(backend: StorageBackend) -> None:
    data = payload(2 * MiB + 1, seed=6)
    await backend.write_bytes("mv/upload/data", data)
    await backend.move("mv/upload/data", "mv/blobs/ab/abcdef/data")
    assert await read_all(backend, "mv/blobs/ab/abcdef/data") == data
    assert not await backend.exists("mv/upload/data")
    assert (await backend.stat("mv/blobs/ab")).is_dir


async def test_move_replaces_destination(backend: StorageBackend) -> None:
    await backend.write_bytes("mv/src", b"new")
    await backend.write_bytes("mv/dst", b"old and longer")
    await backend.move("mv/src", "mv/dst")
    assert await backend.read_bytes("mv/dst") == b"new"
    assert not await backend.exists("mv/src")
    assert await backend.list("mv") == ["dst"]


async def test_move_onto_itself_keeps_content(backend: StorageBackend) -> None:
    await backend.write_bytes("mv/same", b"content")
    await backend.move("mv/same", "mv/same")
    assert await backend.read_bytes("mv/same") == b"content"


async def test_move_missing_source_raises_path_not_found(backend: StorageBackend) -> None:
    await backend.write_bytes("mv/dst", b"untouched")
    with pytest.raises(PathNotFound):
        await backend.move("mv/missing", "mv/dst")
    assert await backend.read_bytes("mv/dst") == b"untouched"
    with pytest.raises(PathNotFound):
        await backend.move("mv/missing", "mv/other")
    assert not await backend.exists("mv/other")


# --- delete / exists ----------------------------------------------------------------------------


async def test_delete_file(backend: StorageBackend) -> None:
    await backend.write_bytes("rm/file", b"x")
    await backend.write_bytes("rm/keep", b"y")
    await backend.delete("rm/file")
    assert not await backend.exists("rm/file")
    with pytest.raises(PathNotFound):
        await backend.read_bytes("rm/file")
    assert await backend.list("rm") == ["keep"]


async def test_delete_whole_tree(backend: StorageBackend) -> None:
    tree = ["rm/t/a", "rm/t/b/c", "rm/t/b/d/e"]
    survivors = {"rm/t2/x": b"1", "rm/tt": b"2", "rm/a": b"3"}  # names sharing the prefix 't'
    for path in tree:
        await backend.write_bytes(path, b"x")
    for path, data in survivors.items():
        await backend.write_bytes(path, data)

    await backend.delete("rm/t/b")
    assert await backend.list("rm/t") == ["a"]
    await backend.delete("rm/t")
    for path in ["rm/t", *tree]:
        assert not await backend.exists(path), path
    for path, data in survivors.items():
        assert await backend.read_bytes(path) == data
    assert await backend.list("rm") == ["a", "t2", "tt"]


async def test_delete_missing_raises_path_not_found(backend: StorageBackend) -> None:
    await backend.write_bytes("rm/file", b"x")
    for path in ["rm/missing", "nothing", "rm/fil", "rm/file/below"]:
        with pytest.raises(PathNotFound):
            await backend.delete(path)
    assert await backend.read_bytes("rm/file") == b"x"


async def test_exists(backend: StorageBackend) -> None:
    await backend.write_bytes("ex/dir/file", b"")
    assert await backend.exists("ex/dir/file")
    assert await backend.exists("ex/dir")
    assert await backend.exists("ex")
    assert not await backend.exists("ex/dir/other")
    assert not await backend.exists("ex/di")
    assert not await backend.exists("ex/dir/file/below")


# --- invalid paths ------------------------------------------------------------------------------

INVALID_PATHS = [
    "/abs",
    "/",
    "..",
    "../escape",
    "a/../../escape",
    "a/..",
    ".",
    "./a",
    "a//b",
    "a/",
    "a\x00b",
    "a\\..\\b",
]


async def _drain(backend: StorageBackend, path: str) -> None:
    async for _ in backend.read(path):
        pass


async def _drain_range(backend: StorageBackend, path: str) -> None:
    async for _ in backend.read(path, 1, 1):
        pass


async def _write_bytes(backend: StorageBackend, path: str) -> None:
    await backend.write_bytes(path, b"x")


async def _writer(backend: StorageBackend, path: str) -> None:
    await (await backend.writer(path)).cancel()


async def _append_writer(backend: StorageBackend, path: str) -> None:
    await (await backend.writer(path, append=True)).cancel()


async def _move_from(backend: StorageBackend, path: str) -> None:
    await backend.move(path, "valid/dst")


async def _move_to(backend: StorageBackend, path: str) -> None:
    await backend.move("valid/file", path)


METHODS: dict[str, Callable[[StorageBackend, str], Awaitable[object]]] = {
    "read": _drain,
    "read_with_range": _drain_range,
    "read_bytes": lambda b, p: b.read_bytes(p),
    "write_bytes": _write_bytes,
    "writer": _writer,
    "append_writer": _append_writer,
    "stat": lambda b, p: b.stat(p),
    "list": lambda b, p: b.list(p),
    "move_from": _move_from,
    "move_to": _move_to,
    "delete": lambda b, p: b.delete(p),
    "exists": lambda b, p: b.exists(p),
}


async def _assert_invalid_everywhere(backend: StorageBackend, method: str, path: str) -> None:
    await backend.write_bytes("valid/file", b"content")
    with pytest.raises(InvalidPath):
        await METHODS[method](backend, path)
    # A rejected call changes nothing.
    assert await backend.read_bytes("valid/file") == b"content"
    assert not await backend.exists("valid/dst")
    assert await backend.list("valid") == ["file"]


@pytest.mark.parametrize("path", INVALID_PATHS, ids=repr)
@pytest.mark.parametrize("method", list(METHODS))
async def test_invalid_path_raises_invalid_path(backend: StorageBackend, method: str, path: str) -> None:
    await _assert_invalid_everywhere(backend, method, path)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "list"])
async def test_empty_path_raises_invalid_path(backend: StorageBackend, method: str) -> None:
    """The empty key names no file; only list() may take it (as the store's root)."""
    await _assert_invalid_everywhere(backend, method, "")


# --- concurrency --------------------------------------------------------------------------------


async def test_many_concurrent_writers_to_different_paths(backend: StorageBackend) -> None:
    count = 48

    async def write(i: int) -> None:
        writer = await backend.writer(f"cc/{i % 4}/blob{i:02d}", append=i % 2 == 1)
        for part in range(6):
            await writer.write(payload(3000 + i, seed=i * 100 + part))
            await asyncio.sleep(0)  # let the other writers interleave
        await writer.commit()

    await asyncio.gather(*(write(i) for i in range(count)))
    for i in range(count):
        expected = b"".join(payload(3000 + i, seed=i * 100 + part) for part in range(6))
        assert await backend.read_bytes(f"cc/{i % 4}/blob{i:02d}") == expected, i
    assert await backend.list("cc") == ["0", "1", "2", "3"]
    assert await backend.list("cc/1") == [f"blob{i:02d}" for i in range(1, count, 4)]


@pytest.mark.parametrize("existing", [False, True], ids=["new-path", "existing-path"])
async def test_two_writers_committing_same_path_leave_one_complete_content(
    backend: StorageBackend, existing: bool
) -> None:
    """Two clients pushing the same blob race; whichever wins, the content is never a mix."""
    if existing:
        await backend.write_bytes("same/blob", b"older")
    contents = [payload(MiB + 11, seed=31), payload(MiB + 7, seed=32)]
    writers = [await backend.writer("same/blob") for _ in contents]

    async def write(index: int) -> None:
        data = contents[index]
        for start in range(0, len(data), 64 * 1024):
            await writers[index].write(data[start:start + 64 * 1024])
            await asyncio.sleep(0)
        await writers[index].commit()

    await asyncio.gather(write(0), write(1))
    assert await read_all(backend, "same/blob") in contents
    assert await backend.list("same") == ["blob"]


async def test_list_after_pages_in_lexical_order(backend: StorageBackend) -> None:
    """Names where one is another's prefix followed by '-' or '.' sort differently as keys
    ('v1/' after 'v1-rc/'); pages must still be lexical and lose nothing."""
    names = ["v1", "v1-rc", "v1.1", "v1.1-alpine", "v10", "v1_x", "a", "b-c", "b", "b.d"]
    for name in names:
        await backend.write_bytes(f"pg/{name}/current/link", name.encode())
    await backend.write_bytes("pg/file", b"x")
    expected = sorted(names + ["file"])
    for size in (1, 2, 3, 100):
        collected: list[str] = []
        last = None
        while True:
            page = await backend.list_after("pg", last, size)
            assert page == sorted(page) and len(page) <= size
            if not page:
                break
            collected += page
            last = page[-1]
        assert collected == expected, size
    assert await backend.list_after("pg", "v1", 2) == ["v1-rc", "v1.1"]
    with pytest.raises(PathNotFound):
        await backend.list_after("missing", None, 5)


# --- bulk listing and deleting (garbage collection, du) -----------------------------------------

WALKED = ["t/a-b/x", "t/a/_l/1/link", "t/a/b/y", "t/a/c", "t/a0/deep/er/z", "t/b", "t/v1.1/q"]


async def walked(backend: StorageBackend, path: str, after: str | None = None,
                 until: str | None = None) -> list[tuple[str, int]]:
    return [(info.path, info.size) async for info in backend.walk(path, after, until)]


async def test_walk_lists_every_file_in_key_order_with_sizes_and_mtimes(backend: StorageBackend) -> None:
    """Keys order: `a-b/` before `a/` ('-' before '/'); everything below one directory together."""
    before = time.time() - 5
    for index, path in enumerate(WALKED):
        await backend.write_bytes(path, b"x" * index)
    appended = await backend.writer("t/a/up/data", append=True)  # an upload: one file, however stored
    await appended.write(b"12345")
    await appended.commit()
    appended = await backend.writer("t/a/up/data", append=True)
    await appended.write(b"678")
    await appended.commit()
    expected = sorted([(path[2:], index) for index, path in enumerate(WALKED)] + [("a/up/data", 8)])
    assert await walked(backend, "t") == expected
    infos = [info async for info in backend.walk("t")]
    assert all(not info.is_dir and before <= info.mtime <= time.time() + 5 for info in infos)
    assert await walked(backend, "t/a") == [("_l/1/link", 1), ("b/y", 2), ("c", 3), ("up/data", 8)]
    assert await walked(backend, "missing") == []


async def test_walk_ranges_cover_the_tree_once(backend: StorageBackend) -> None:
    """Ranges (after, until] cut anywhere, directories included, list each file exactly once."""
    for path in WALKED:
        await backend.write_bytes(path, b"")
    everything = [path for path, _ in await walked(backend, "t")]
    for cuts in (["a/"], ["a-b/\U0010ffff", "a/\U0010ffff"], ["a/b", "b"], ["0", "a0/deep", "z"]):
        bounds = [None, *cuts, None]
        pieces = [await walked(backend, "t", after, until) for after, until in zip(bounds, bounds[1:])]
        assert [path for piece in pieces for path, _ in piece] == everything, cuts


async def test_delete_files_deletes_those_given_and_skips_missing(backend: StorageBackend) -> None:
    names = [f"n{index:02d}" for index in range(20)]
    for name in names:
        await backend.write_bytes(f"del/{name}/link", b"x")
    await backend.delete_files([f"del/{name}/link" for name in names if name != "n07"] + ["del/gone/link"])
    assert [info.path async for info in backend.walk("del")] == ["n07/link"]
    await backend.delete_files([])


async def test_prune_leaves_no_empty_directory_and_keeps_others(backend: StorageBackend) -> None:
    for index in range(20):  # enough to be spread over threads
        await backend.write_bytes(f"pr/gone{index:02d}/data", b"x")
        await backend.delete(f"pr/gone{index:02d}/data")
    await backend.prune([f"pr/gone{index:02d}" for index in range(20)])
    await backend.write_bytes("pr/empty/data", b"x")
    await backend.write_bytes("pr/full/data", b"y")
    await backend.delete("pr/empty/data")
    await backend.prune(["pr/empty", "pr/full", "pr/never"])
    assert await backend.list("pr") == ["full"]
    assert await read_all(backend, "pr/full/data") == b"y"


async def test_walk_reports_a_leaf_directory_once_or_the_files_below_it(backend: StorageBackend) -> None:
    """A backend with directories need not read those `leaf` accepts; one without lists their files."""
    for path in ("lf/a/x/link", "lf/a/y/link", "lf/b"):
        await backend.write_bytes(path, b"z")
    found = [(info.path, info.is_dir) async for info in backend.walk("lf", leaf=lambda path: path.startswith("a/"))]
    assert found in ([("a/x", True), ("a/y", True), ("b", False)],
                     [("a/x/link", False), ("a/y/link", False), ("b", False)])


async def test_move_files_moves_each_and_says_which_were_there(backend: StorageBackend) -> None:
    names = [f"m{index:02d}" for index in range(20)]
    for name in names:
        await backend.write_bytes(f"mv/{name}/data", name.encode())
    moves = [(f"mv/{name}/data", f"aside/{name}") for name in names] + [("mv/gone/data", "aside/gone")]
    assert await backend.move_files(moves) == [True] * len(names) + [False]
    assert await backend.list("aside") == names
    assert [await read_all(backend, f"aside/{name}") for name in names] == [name.encode() for name in names]
    assert [info.path async for info in backend.walk("mv")] == []
