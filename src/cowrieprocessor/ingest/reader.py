"""Streaming the lines of one input file, with their offsets, through any compression.

:func:`read_lines` yields a file as :class:`Line` records carrying their offsets in the
decompressed stream, so the loader can checkpoint and resume; gzip and bz2 layers are
opened as many deep as rotation stacked them. Damage (a truncated or corrupt archive, an
unreadable file, an over-long line) never raises out of :func:`read_lines`: it arrives
in the stream as a :class:`ReadProblem` after every line that could be read before it.
Which files to read is :mod:`cowrieprocessor.ingest.discovery`'s business, what a file
is (compression, fingerprint) :mod:`cowrieprocessor.ingest.files`'.

Memory stays flat: files are read in chunks of :data:`CHUNK_BYTES`, decompressed output is
bounded to the same size per step, and a line longer than ``max_line_bytes`` is counted
and skipped rather than held.
"""

from __future__ import annotations

import bz2
import io
import itertools
import logging
import os
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass

from cowrieprocessor.ingest.files import Compression, SourceFile, detect_compression

__all__ = ["CHUNK_BYTES", "Line", "ReadProblem", "Stop", "content_chunks", "read_lines"]

logger = logging.getLogger(__name__)


CHUNK_BYTES = 1024 * 1024
"""Size of one raw read and the most decompressed output produced per step."""
_BZ2_FEED_BYTES = 16 * 1024
# Archives we cannot open: reading them as text would only make a dead letter per line.
_UNSUPPORTED_MAGIC = (
    (b"\xfd7zXZ\x00", "xz compression"),
    (b"\x28\xb5\x2f\xfd", "zstd compression"),
    (b"\x04\x22\x4d\x18", "lz4 compression"),
    (b"PK\x03\x04", "a zip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-zip archive"),
)


@dataclass(frozen=True, slots=True)
class Line:
    """One physical line of the decompressed stream.

    ``start`` and ``end`` are decompressed offsets; ``end`` is a safe checkpoint when
    ``terminated`` is True. ``data`` excludes the newline and one trailing ``\\r``.
    """

    number: int
    start: int
    end: int
    data: bytes
    terminated: bool


@dataclass(frozen=True, slots=True)
class ReadProblem:
    """Why reading stopped or skipped something.

    ``number`` is the line in progress at the problem (the partial line's number if one was
    yielded just before, else the next line's number); ``offset`` is the decompressed
    offset where reading stopped, or for ``line_too_long`` the start of the skipped line.
    ``reason`` is one of ``truncated_archive``, ``corrupt_archive``, ``empty_archive``,
    ``unreadable`` or ``line_too_long``; only ``line_too_long`` lets reading go on.
    """

    number: int
    offset: int
    reason: str
    detail: str


# The generated __init__ of a frozen dataclass costs about 0.9 µs, most of the per-line
# budget; setting the slots directly builds an identical, equally immutable object in half
# the time. Only this module builds Line objects this way: in _new_line, and inlined in
# the hot loop of _split_lines.
_new_object = object.__new__
_set_number, _set_start, _set_end, _set_data, _set_terminated = (
    vars(Line)[field].__set__ for field in ("number", "start", "end", "data", "terminated")
)


def _new_line(number: int, start: int, end: int, data: bytes, terminated: bool) -> Line:
    line: Line = _new_object(Line)
    _set_number(line, number)
    _set_start(line, start)
    _set_end(line, end)
    _set_data(line, data)
    _set_terminated(line, terminated)
    return line


@dataclass(frozen=True, slots=True)
class Stop:
    reason: str
    detail: str
    offset: int | None = None  # decoded offset, when it is not the splitter's position


class _TruncatedData(Exception):
    pass


class _CorruptData(Exception):
    pass


# How many archive layers are opened: rotation that compresses a compressed log again
# gives names like cowrie.json.1.gz.1.gz, with two gzip layers.
_MAX_LAYERS = 3


def content_chunks(
    read: Callable[[int], bytes], compression: Compression, name: str, from_start: bool = True
) -> Iterator[bytes | Stop]:
    """The file's content: :func:`_decoded_chunks`, with archives inside archives opened
    too (up to _MAX_LAYERS), so offsets and lines are those of the innermost text."""
    chunks = _decoded_chunks(read, compression, name, from_start)
    for _ in range(_MAX_LAYERS - 1):
        if compression == "none":
            break
        first = next(chunks, None)
        if first is None:
            return
        if isinstance(first, Stop):
            yield first
            return
        inner = detect_compression(first[:4], "")
        chunks = itertools.chain([first], chunks)
        if inner == "none":
            break
        compression = inner
        chunks = _decoded_chunks(_ChunkReader(chunks).read, inner, name, from_start)
    yield from chunks


class _ChunkReader:
    """A ``read(n)`` over decoded chunks, to decode an archive inside an archive. A
    problem of the outer layer ends the stream here (the inner layer then reports it
    as truncated)."""

    def __init__(self, chunks: Iterator[bytes | Stop]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None or isinstance(chunk, Stop):
                break
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def _decoded_chunks(
    read: Callable[[int], bytes], compression: Compression, name: str, from_start: bool = True
) -> Iterator[bytes | Stop]:
    """Yield the decompressed content in chunks of at most CHUNK_BYTES, then maybe a Stop.

    Gzip members and bz2 streams are read one after another, as the gzip and bzip2 tools
    do. Zero bytes after a gzip member are padding (tape blocking) and skipped; anything
    else after a complete member must start another member, or it is corruption. A plain
    file read ``from_start`` that begins like an archive we cannot open (xz, zstd, zip...)
    stops at once as unreadable.
    """
    label = "gzip" if compression == "gzip" else "bz2"
    members = 0
    try:
        data = read(CHUNK_BYTES)
        if compression == "none":
            for magic, kind in _UNSUPPORTED_MAGIC if from_start else ():
                if data.startswith(magic):
                    yield Stop("unreadable", f"{name}: {kind} is not supported; decompress it")
                    return
            while data:
                yield data
                data = read(CHUNK_BYTES)
            return
        if not data:
            yield Stop("empty_archive", f"{name}: 0-byte file named as a {label} archive")
            return
        while True:
            if compression == "gzip":
                data = data.lstrip(b"\x00")
            if not data:
                data = read(CHUNK_BYTES)
                if not data:
                    return
                continue
            members += 1
            data = yield from _decoded_member(read, compression, data)
    except _TruncatedData:
        yield Stop(
            "truncated_archive",
            f"{name}: {label} member {members} ends before its end-of-stream marker "
            "(truncated archive)",
        )
    except _CorruptData as error:
        yield Stop("corrupt_archive", f"{name}: corrupt {label} data in member {members}: {error}")
    except OSError as error:
        yield Stop("unreadable", f"{name}: read failed: {error}")


def _decoded_member(
    read: Callable[[int], bytes], compression: Compression, data: bytes
) -> Generator[bytes, None, bytes]:
    """Decompress one gzip member or bz2 stream; return the raw bytes that follow it.

    Output per step is capped at CHUNK_BYTES, so a highly compressed member never expands
    into memory at once. Raises _TruncatedData at end of input before the member's end,
    _CorruptData on undecodable data, OSError when reading fails.
    """
    if compression == "gzip":
        inflater = zlib.decompressobj(wbits=31)
        while True:
            before = inflater.copy()
            try:
                out = inflater.decompress(data, CHUNK_BYTES)
            except zlib.error as error:
                # The failed call's output is lost with the exception; replay it in small
                # steps from the state before it so every decodable byte still comes out.
                yield from _salvage_gzip(before, data)
                raise _CorruptData(str(error)) from error
            if out:
                yield out
            if inflater.eof:
                return inflater.unused_data
            data = inflater.unconsumed_tail
            # A full chunk may leave output inside zlib; ask again before reading more.
            if not data and len(out) < CHUNK_BYTES:
                data = read(CHUNK_BYTES)
                if not data:
                    raise _TruncatedData

    # bz2 releases a block only after checking it, and an error loses the output of the
    # whole call: feeding small slices keeps good blocks from sharing a call with a bad one.
    decompressor = bz2.BZ2Decompressor()
    view = memoryview(data)
    while True:
        feed = view[:0]
        if decompressor.needs_input:
            if not view:
                view = memoryview(read(CHUNK_BYTES))
                if not view:
                    raise _TruncatedData
            feed, view = view[:_BZ2_FEED_BYTES], view[_BZ2_FEED_BYTES:]
        try:
            out = decompressor.decompress(feed, CHUNK_BYTES)
        except (OSError, EOFError, ValueError) as error:
            raise _CorruptData(str(error)) from error
        if out:
            yield out
        if decompressor.eof:
            return decompressor.unused_data + view.tobytes()


def _salvage_gzip(inflater: zlib._Decompress, data: bytes) -> Iterator[bytes]:
    """Decode ``data`` up to the first bad byte, in 4 KiB steps and then byte by byte."""
    step = 4096
    pos = 0
    while pos < len(data) and not inflater.eof:
        before = inflater.copy()
        piece = data[pos : pos + step]
        outputs: list[bytes] = []
        try:
            out = inflater.decompress(piece, CHUNK_BYTES)
            outputs.append(out)
            while inflater.unconsumed_tail or len(out) == CHUNK_BYTES:
                out = inflater.decompress(inflater.unconsumed_tail, CHUNK_BYTES)
                outputs.append(out)
        except zlib.error:
            if step == 1:
                return
            inflater, step = before, 1
            continue
        yield from outputs
        pos += len(piece)


def read_lines(
    src: SourceFile,
    start_offset: int = 0,
    start_line: int = 0,
    max_line_bytes: int = 16 * 1024 * 1024,
) -> Iterator[Line | ReadProblem]:
    """Stream the lines of ``src`` from decompressed ``start_offset``, numbered from
    ``start_line + 1``.

    ``start_offset`` must be a line start the caller got from an earlier :attr:`Line.end`
    (with ``start_line`` its line count); plain files seek there, compressed files are
    decompressed and the bytes before it discarded. An offset beyond the end of the
    content (the file shrank since) yields nothing and logs a warning.

    Never raises for bad input: a line over ``max_line_bytes`` (not counting the newline
    and a trailing ``\\r``) becomes a ``line_too_long`` problem, is skipped without being
    held in memory, and reading goes on. A truncated, corrupt or unreadable file yields
    every line decoded before the damage, then the partial line (``terminated`` False)
    if any byte of it was decoded, then one problem, and the iterator ends. A 0-byte file
    whose compression is gzip or bz2 yields one ``empty_archive`` problem; a 0-byte plain
    file yields nothing.

    The file is opened on the first ``next()`` and closed when the iterator is exhausted
    or closed. A file being appended to is read up to wherever its end is at that moment;
    a final line without newline then comes out with ``terminated`` False.

    Raises:
        ValueError: a negative offset or line, or ``max_line_bytes`` below 1.
    """
    if start_offset < 0 or start_line < 0 or max_line_bytes < 1:
        raise ValueError(
            f"read_lines needs start_offset >= 0, start_line >= 0 and max_line_bytes >= 1, "
            f"got {start_offset}, {start_line}, {max_line_bytes}"
        )
    name = str(src.path)
    try:
        handle = open(src.path, "rb", buffering=0)  # noqa: SIM115 - closed in finally
    except OSError as error:
        detail = f"{name}: cannot open: {error.strerror or error}"
        yield _logged(ReadProblem(start_line + 1, start_offset, "unreadable", detail))
        return
    try:
        chunks = content_chunks(handle.read, src.compression, name, start_offset == 0)
        if start_offset:
            if src.compression == "none":
                chunks = _seek_plain(handle, chunks, start_offset, name)
            else:
                chunks = _skip_decoded(chunks, start_offset, name)
        yield from _split_lines(chunks, name, start_offset, start_line, max_line_bytes)
    finally:
        handle.close()


def _seek_plain(
    handle: io.FileIO, chunks: Iterator[bytes | Stop], offset: int, name: str
) -> Iterator[bytes | Stop]:
    try:
        size = os.fstat(handle.fileno()).st_size
        if offset > size:
            logger.warning("%s: resume offset %d is beyond the end (%d bytes)", name, offset, size)
            return
        handle.seek(offset)
    except OSError as error:
        yield Stop("unreadable", f"{name}: cannot seek to {offset}: {error}")
        return
    yield from chunks


def _skip_decoded(
    chunks: Iterator[bytes | Stop], offset: int, name: str
) -> Iterator[bytes | Stop]:
    remaining = offset
    for chunk in chunks:
        if isinstance(chunk, Stop):
            # The damage lies before the resume point; report where decoding stopped.
            yield Stop(chunk.reason, chunk.detail, offset - remaining)
            return
        if len(chunk) > remaining:
            yield chunk[remaining:]
            yield from chunks
            return
        remaining -= len(chunk)
        if remaining == 0:
            yield from chunks
            return
    logger.warning(
        "%s: resume offset %d is beyond the end (%d bytes)", name, offset, offset - remaining
    )


def _split_lines(
    chunks: Iterable[bytes | Stop],
    name: str,
    start_offset: int,
    start_line: int,
    max_line_bytes: int,
) -> Iterator[Line | ReadProblem]:
    """Cut decoded chunks into lines, carrying a line across chunk boundaries."""
    number = start_line
    pos = start_offset  # decoded offset of the current line's first byte
    carried: list[bytes] = []  # pieces of a line that began in an earlier chunk
    carried_len = 0  # its length so far, still counted after an oversize line is dropped
    oversize = False
    limit = max_line_bytes + 1  # room for a trailing \r that is not counted
    # Local names: the loop below runs once per line and global lookups cost time.
    new_object, set_number, set_start = _new_object, _set_number, _set_start
    set_end, set_data, set_terminated = _set_end, _set_data, _set_terminated

    for chunk in chunks:
        if type(chunk) is not bytes:
            assert isinstance(chunk, Stop)
            if carried_len:
                number += 1
                yield _partial_line(name, number, pos, carried, carried_len, max_line_bytes)
                pos += carried_len
                yield _logged(ReadProblem(number, pos, chunk.reason, chunk.detail))
            else:
                stopped_at = pos if chunk.offset is None else chunk.offset
                yield _logged(ReadProblem(number + 1, stopped_at, chunk.reason, chunk.detail))
            return

        pieces = chunk.split(b"\n")
        tail = pieces.pop()  # the bytes after the chunk's last newline, maybe empty

        first = 0
        if carried_len and pieces:
            # The chunk's first newline ends the line carried over from earlier chunks.
            head = pieces[0]
            first = 1
            number += 1
            length = carried_len + len(head)
            end = pos + length + 1
            if oversize or length > limit:
                yield _too_long(name, number, pos, length, max_line_bytes, True)
            else:
                data = b"".join(carried) + head
                if data.endswith(b"\r"):
                    data = data[:-1]
                if len(data) > max_line_bytes:
                    yield _too_long(name, number, pos, length, max_line_bytes, True)
                else:
                    yield _new_line(number, pos, end, data, True)
            pos = end
            carried = []
            carried_len = 0
            oversize = False

        del pieces[:first]
        if len(chunk) <= max_line_bytes and b"\r" not in chunk:
            # Common case, kept lean: no piece can be too long and none ends in \r.
            for piece in pieces:
                number += 1
                end = pos + len(piece) + 1
                line = new_object(Line)
                set_number(line, number)
                set_start(line, pos)
                set_end(line, end)
                set_data(line, piece)
                set_terminated(line, True)
                yield line
                pos = end
        else:
            for piece in pieces:
                number += 1
                end = pos + len(piece) + 1
                if piece.endswith(b"\r"):
                    piece = piece[:-1]
                if len(piece) > max_line_bytes:
                    yield _too_long(name, number, pos, end - pos - 1, max_line_bytes, True)
                else:
                    yield _new_line(number, pos, end, piece, True)
                pos = end

        if tail:
            carried_len += len(tail)
            if not oversize:
                carried.append(tail)
                if carried_len > limit:
                    oversize = True
                    carried = []

    # End of input without damage: the last line may lack its newline.
    if carried_len:
        yield _partial_line(name, number + 1, pos, carried, carried_len, max_line_bytes)


def _partial_line(
    name: str, number: int, start: int, carried: list[bytes], length: int, limit: int
) -> Line | ReadProblem:
    """The last line when input ends without a newline (``carried`` empty if oversize)."""
    if length <= limit + 1:
        data = b"".join(carried)
        if data.endswith(b"\r"):
            data = data[:-1]
        if len(data) <= limit:
            return _new_line(number, start, start + length, data, False)
    return _too_long(name, number, start, length, limit, False)


def _too_long(
    name: str, number: int, start: int, length: int, limit: int, terminated: bool
) -> ReadProblem:
    ending = "" if terminated else ", unterminated at end of input"
    return _logged(
        ReadProblem(
            number,
            start,
            "line_too_long",
            f"{name}: line {number} has {length} bytes{ending}, over the {limit}-byte limit; "
            "skipped",
        )
    )


def _logged(problem: ReadProblem) -> ReadProblem:
    # Debug only: the caller receives the problem and reports it to the user.
    logger.debug("%s (line %d, offset %d)", problem.detail, problem.number, problem.offset)
    return problem
