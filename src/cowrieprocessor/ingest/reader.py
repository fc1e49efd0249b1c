"""Input files of the loader: discovery, compression, and streaming lines with offsets.

This module is pure I/O. It turns the paths a user gives into :class:`SourceFile` records
(compression detected from magic bytes, size, and a fingerprint of the first bytes), and
streams a file as :class:`Line` records carrying their offsets in the decompressed stream,
so the loader can checkpoint and resume. Damage (a truncated or corrupt archive, an
unreadable file, an over-long line) never raises out of :func:`read_lines`: it arrives
in the stream as a :class:`ReadProblem` after every line that could be read before it.

Memory stays flat: files are read in chunks of :data:`CHUNK_BYTES`, decompressed output is
bounded to the same size per step, and a line longer than ``max_line_bytes`` is counted
and skipped rather than held.
"""

from __future__ import annotations

import bz2
import glob
import hashlib
import io
import itertools
import logging
import os
import re
import stat
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "CHUNK_BYTES",
    "HEAD_BYTES",
    "Compression",
    "Line",
    "ReadProblem",
    "SourceFile",
    "describe_file",
    "discover",
    "grew_from",
    "read_lines",
    "sort_key",
]

logger = logging.getLogger(__name__)

Compression = Literal["none", "gzip", "bz2"]

HEAD_BYTES = 4096
"""How many bytes at the start of a file :attr:`SourceFile.head_sha256` covers."""

CHUNK_BYTES = 1024 * 1024
"""Size of one raw read and the most decompressed output produced per step."""

_GZIP_MAGIC = b"\x1f\x8b"
_BZ2_MAGIC = b"BZh"
_NAME_HINTS: dict[str, Compression] = {
    "gz": "gzip", "gzip": "gzip", "tgz": "gzip", "bz2": "bz2", "bz": "bz2", "tbz2": "bz2"
}  # fmt: skip
# Editor backups and partial copies: a copy in progress must not be loaded as a log.
_TEMP_SUFFIXES = ("~", ".tmp", ".temp", ".part", ".partial", ".swp", ".swx")
_GLOB_CHARS = re.compile(r"[*?\[]")
_DIGIT_RUNS = re.compile(r"([0-9]+)")
_ROTATION_TAIL = re.compile(r"\.(?:(gz|gzip|bz2|bz)|(0|[1-9][0-9]{0,2}))$", re.IGNORECASE)
# Sorts after every real character, so "cowrie.json" comes after "cowrie.json.<suffix>".
_END_OF_NAME = "\U0010ffff"
_SKIPPED_NAMES_SHOWN = 5
_BZ2_FEED_BYTES = 16 * 1024
# Archives we cannot open: reading them as text would only make a dead letter per line.
_UNSUPPORTED_MAGIC = (
    (b"\xfd7zXZ\x00", "xz compression"),
    (b"\x28\xb5\x2f\xfd", "zstd compression"),
    (b"\x04\x22\x4d\x18", "lz4 compression"),
    (b"PK\x03\x04", "a zip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-zip archive"),
)


@dataclass(frozen=True)
class SourceFile:
    """One input file as found on disk.

    ``compression`` comes from the magic bytes, not the name. Only a file too short to hold
    the magic (0 bytes, or a cut-off prefix of it) takes its compression from the name
    (``.gz``/``.bz2`` anywhere among its dot-separated parts), so that an empty or cut-off
    archive is reported as one instead of being read as an empty text file.
    """

    path: Path
    compression: Compression
    size: int
    head_sha256: str


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


def _detect_compression(head: bytes, name: str) -> Compression:
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_BZ2_MAGIC) and len(head) > 3 and head[3:4] in b"123456789":
        return "bz2"
    hinted = {_NAME_HINTS[p] for p in name.lower().split(".")[1:] if p in _NAME_HINTS}
    for kind, magic in (("gzip", _GZIP_MAGIC), ("bz2", _BZ2_MAGIC + b"1")):
        if kind in hinted and len(head) < len(magic) and magic.startswith(head):
            return kind
    return "none"


def describe_file(path: Path) -> SourceFile:
    """Fingerprint one file: resolved path, compression, size and head digest.

    Size and head are taken from the same open file, so a file being appended to gives a
    consistent pair (the head may be shorter than HEAD_BYTES only if the size is too).

    Raises:
        OSError: the file cannot be opened or read.
    """
    resolved = path.expanduser().resolve()
    with open(resolved, "rb", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        head = _read_up_to(handle.read, HEAD_BYTES)
    return SourceFile(
        path=resolved,
        compression=_detect_compression(head, resolved.name),
        size=max(size, len(head)),
        head_sha256=hashlib.sha256(head).hexdigest(),
    )


def grew_from(src: SourceFile, size: int, head_sha256: str) -> bool:
    """Tell whether ``src`` is the file once fingerprinted as ``size``/``head_sha256``, grown.

    True when ``src`` is at least ``size`` bytes and its first ``min(size, HEAD_BYTES)``
    bytes hash to ``head_sha256``; that holds for a file that was under HEAD_BYTES at the
    earlier run too (its head digest then covered fewer bytes). A file truncated, replaced
    or rewritten at the same path gives False. Reads the file again when ``size`` is below
    HEAD_BYTES; an unreadable file gives False.
    """
    if src.size < size:
        return False
    if size >= HEAD_BYTES:
        return src.head_sha256 == head_sha256
    try:
        with open(src.path, "rb", buffering=0) as handle:
            head = _read_up_to(handle.read, size)
    except OSError as error:
        logger.warning("cannot re-read the head of %r: %s", str(src.path), error)
        return False
    return len(head) == size and hashlib.sha256(head).hexdigest() == head_sha256


def tail_sha256(path: Path, offset: int) -> str | None:
    """SHA-256 of the (up to HEAD_BYTES) bytes of a plain file that end at ``offset``.

    Stored with a checkpoint, it tells a file that grew from one rewritten with the same
    first bytes: the bytes before the checkpoint must still be the ones read. None when
    the file is shorter than ``offset`` or cannot be read.
    """
    start = max(0, offset - HEAD_BYTES)
    try:
        with open(path, "rb", buffering=0) as handle:
            handle.seek(start)
            data = _read_up_to(handle.read, offset - start)
    except OSError:
        return None
    if len(data) != offset - start:
        return None
    return hashlib.sha256(data).hexdigest()


def sort_key(path: Path) -> tuple[object, ...]:
    """Order files so rotated logs of one directory come oldest first where the name says.

    Digit runs compare as numbers (``cowrie.json.2017_11_4`` before ``…2017_11_14``); a
    name sorts after every longer name it begins (the live ``cowrie.json`` after
    ``cowrie.json.2018-06-13``); and logrotate indexes count backwards in time
    (``cowrie.json.2.gz``, ``cowrie.json.1``, ``cowrie.json``; ``cowrie.json.1.gz.1.gz``,
    a rotated ``cowrie.json.1.gz``, just before ``cowrie.json.1.gz``). Files are grouped
    by directory first.
    """
    base, indexes = _split_rotation(path.name)
    rotation = (*(-index for index in indexes), 1)
    return (
        _natural(str(path.parent)),
        _natural(base + _END_OF_NAME),
        rotation,
        _natural(path.name),
        path.name,
    )


def _natural(text: str) -> tuple[str | int, ...]:
    # re.split with one group always alternates text, digits, text..., so the tuples of two
    # names compare str with str and int with int.
    parts = _DIGIT_RUNS.split(text.casefold())
    return tuple(int(part) if i % 2 else part for i, part in enumerate(parts))


def _split_rotation(name: str) -> tuple[str, list[int]]:
    """Split ``cowrie.json.1.gz.1.gz`` into ``cowrie.json`` and indexes ``[1, 1]``.

    Indexes are listed innermost (first rotation) first. A name whose remaining base ends
    in a number (``log.2018.06.13``) is a date, not a rotation chain, and stays whole.
    """
    base = name
    indexes: list[int] = []
    while (match := _ROTATION_TAIL.search(base)) is not None and match.start() > 0:
        if match.group(2) is not None:
            indexes.append(int(match.group(2)))
        base = base[: match.start()]
    if not indexes:
        return _strip_compression(name), []
    if base.rsplit(".", 1)[-1].isdigit():
        return name, []
    indexes.reverse()
    return base, indexes


def _strip_compression(name: str) -> str:
    while (match := _ROTATION_TAIL.search(name)) is not None and match.group(1) is not None:
        name = name[: match.start()]
    return name


def _is_skipped_name(name: str) -> bool:
    return name.startswith(".") or name.endswith(_TEMP_SUFFIXES)


def discover(inputs: Sequence[str]) -> tuple[list[SourceFile], list[str]]:
    """Expand files, directories and glob patterns into the files to load.

    A path naming a file is always taken (whatever its content). Directories are walked
    recursively without following directory symlinks; glob patterns support ``**``.
    Inside directories and glob matches, hidden names (``.name``), temp and backup names
    (``~``, ``.tmp``, ``.part``, ``.swp``...) and files whose content does not begin with
    a JSON object or array (after optional whitespace, decompressed if need be) are
    skipped, so pointing at ``/var/log/cowrie`` leaves out ``cowrie.log`` and a README.
    Files that cannot be judged (unreadable archives) are kept so reading reports them.

    Returns:
        The files sorted by :func:`sort_key` and de-duplicated by resolved path, and one
        human-readable message per input that matched nothing, could not be opened, or
        had files skipped for their content.
    """
    found: dict[Path, SourceFile] = {}
    messages: list[str] = []

    for raw in inputs:
        if not raw.strip():
            messages.append(f"{raw!r}: empty path")
            continue
        text = os.path.expanduser(raw)
        candidate = Path(text)
        if candidate.is_dir():
            _expand_directory(candidate, raw, found, messages)
        elif candidate.exists() or candidate.is_symlink():
            _add_explicit(candidate, found, messages)
        elif _GLOB_CHARS.search(text):
            _expand_glob(text, raw, found, messages)
        else:
            messages.append(f"{raw!r}: no such file or directory")

    files = sorted(found.values(), key=lambda src: sort_key(src.path))
    return files, messages


def _add_explicit(path: Path, found: dict[Path, SourceFile], messages: list[str]) -> None:
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            messages.append(f"{str(path)!r}: not a regular file")
            return
        src = describe_file(path)
    except OSError as error:
        messages.append(f"{str(path)!r}: cannot open: {error.strerror or error}")
        return
    found.setdefault(src.path, src)


def _expand_directory(
    directory: Path, raw: str, found: dict[Path, SourceFile], messages: list[str]
) -> None:
    def walk_error(error: OSError) -> None:
        messages.append(f"{error.filename!r}: cannot list directory: {error.strerror}")

    candidates: list[Path] = []
    for root, dirs, names in os.walk(directory, onerror=walk_error):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        candidates.extend(Path(root, name) for name in names if not _is_skipped_name(name))
    added = _add_sniffed(candidates, raw, found, messages)
    if not added:
        messages.append(f"{raw!r}: directory holds no log files")


def _expand_glob(
    pattern: str, raw: str, found: dict[Path, SourceFile], messages: list[str]
) -> None:
    matches = glob.glob(pattern, recursive=True)
    if not matches:
        messages.append(f"{raw!r}: pattern matched no files")
    candidates: list[Path] = []
    for match in matches:
        path = Path(match)
        if path.is_dir():
            _expand_directory(path, match, found, messages)
        elif not _is_skipped_name(path.name):
            candidates.append(path)
    _add_sniffed(candidates, raw, found, messages)


def _add_sniffed(
    candidates: Iterable[Path], raw: str, found: dict[Path, SourceFile], messages: list[str]
) -> int:
    """Fingerprint candidates, keep those that look like JSON logs; return how many."""
    added = 0
    not_json: list[str] = []
    for path in candidates:
        try:
            if not stat.S_ISREG(path.stat().st_mode):
                continue  # sockets, FIFOs and broken links inside a tree are not logs
            src = describe_file(path)
            looks_like_json = _looks_like_json(src)
        except OSError as error:
            messages.append(f"{str(path)!r}: cannot open: {error.strerror or error}")
            continue
        if not looks_like_json:
            not_json.append(path.name)
            continue
        found.setdefault(src.path, src)
        added += 1
    if not_json:
        shown = ", ".join(repr(name) for name in sorted(not_json)[:_SKIPPED_NAMES_SHOWN])
        more = len(not_json) - _SKIPPED_NAMES_SHOWN
        suffix = f" and {more} more" if more > 0 else ""
        messages.append(
            f"{raw!r}: skipped {len(not_json)} file(s) that do not start with a JSON "
            f"object: {shown}{suffix}"
        )
    return added


def _looks_like_json(src: SourceFile) -> bool:
    """First decoded non-blank byte is ``{`` or ``[``; empty or undecodable counts as yes."""
    blank = b" \t\r\n\xef\xbb\xbf"  # whitespace and a UTF-8 byte order mark
    decoded = b""
    with open(src.path, "rb", buffering=0) as handle:
        for chunk in _content_chunks(handle.read, src.compression, str(src.path)):
            if isinstance(chunk, _Stop):
                break
            decoded = (decoded + chunk[:HEAD_BYTES]).lstrip(blank)
            if decoded:
                break
    return not decoded or decoded[:1] in (b"{", b"[")


@dataclass(frozen=True, slots=True)
class _Stop:
    reason: str
    detail: str
    offset: int | None = None  # decoded offset, when it is not the splitter's position


class _TruncatedData(Exception):
    pass


class _CorruptData(Exception):
    pass


def _read_up_to(read: Callable[[int], bytes], size: int) -> bytes:
    parts: list[bytes] = []
    remaining = size
    while remaining > 0 and (part := read(remaining)):
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


# How many archive layers are opened: rotation that compresses a compressed log again
# gives names like cowrie.json.1.gz.1.gz, with two gzip layers.
_MAX_LAYERS = 3


def _content_chunks(
    read: Callable[[int], bytes], compression: Compression, name: str, from_start: bool = True
) -> Iterator[bytes | _Stop]:
    """The file's content: :func:`_decoded_chunks`, with archives inside archives opened
    too (up to _MAX_LAYERS), so offsets and lines are those of the innermost text."""
    chunks = _decoded_chunks(read, compression, name, from_start)
    for _ in range(_MAX_LAYERS - 1):
        if compression == "none":
            break
        first = next(chunks, None)
        if first is None:
            return
        if isinstance(first, _Stop):
            yield first
            return
        inner = _detect_compression(first[:4], "")
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

    def __init__(self, chunks: Iterator[bytes | _Stop]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None or isinstance(chunk, _Stop):
                break
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def _decoded_chunks(
    read: Callable[[int], bytes], compression: Compression, name: str, from_start: bool = True
) -> Iterator[bytes | _Stop]:
    """Yield the decompressed content in chunks of at most CHUNK_BYTES, then maybe a _Stop.

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
                    yield _Stop("unreadable", f"{name}: {kind} is not supported; decompress it")
                    return
            while data:
                yield data
                data = read(CHUNK_BYTES)
            return
        if not data:
            yield _Stop("empty_archive", f"{name}: 0-byte file named as a {label} archive")
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
        yield _Stop(
            "truncated_archive",
            f"{name}: {label} member {members} ends before its end-of-stream marker "
            "(truncated archive)",
        )
    except _CorruptData as error:
        yield _Stop(
            "corrupt_archive", f"{name}: corrupt {label} data in member {members}: {error}"
        )
    except OSError as error:
        yield _Stop("unreadable", f"{name}: read failed: {error}")


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
        chunks = _content_chunks(handle.read, src.compression, name, start_offset == 0)
        if start_offset:
            if src.compression == "none":
                chunks = _seek_plain(handle, chunks, start_offset, name)
            else:
                chunks = _skip_decoded(chunks, start_offset, name)
        yield from _split_lines(chunks, name, start_offset, start_line, max_line_bytes)
    finally:
        handle.close()


def _seek_plain(
    handle: io.FileIO, chunks: Iterator[bytes | _Stop], offset: int, name: str
) -> Iterator[bytes | _Stop]:
    try:
        size = os.fstat(handle.fileno()).st_size
        if offset > size:
            logger.warning("%s: resume offset %d is beyond the end (%d bytes)", name, offset, size)
            return
        handle.seek(offset)
    except OSError as error:
        yield _Stop("unreadable", f"{name}: cannot seek to {offset}: {error}")
        return
    yield from chunks


def _skip_decoded(
    chunks: Iterator[bytes | _Stop], offset: int, name: str
) -> Iterator[bytes | _Stop]:
    remaining = offset
    for chunk in chunks:
        if isinstance(chunk, _Stop):
            # The damage lies before the resume point; report where decoding stopped.
            yield _Stop(chunk.reason, chunk.detail, offset - remaining)
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
    chunks: Iterable[bytes | _Stop],
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
            assert isinstance(chunk, _Stop)
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
