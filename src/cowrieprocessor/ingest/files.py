"""Input files' identity: compression from magic bytes, and fingerprints that tell a
file that grew from one replaced at the same path.

A :class:`SourceFile` is what the loader records about a file before reading it (size
and a digest of its first :data:`HEAD_BYTES`); with a checkpoint's :func:`tail_sha256`
it decides whether to read on from the checkpoint or from the start.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "HEAD_BYTES",
    "Compression",
    "SourceFile",
    "describe_file",
    "detect_compression",
    "grew_from",
    "read_up_to",
    "tail_sha256",
]

logger = logging.getLogger(__name__)

Compression = Literal["none", "gzip", "bz2"]

HEAD_BYTES = 4096
"""How many bytes at the start of a file :attr:`SourceFile.head_sha256` covers."""

_GZIP_MAGIC = b"\x1f\x8b"
_BZ2_MAGIC = b"BZh"
_NAME_HINTS: dict[str, Compression] = {
    "gz": "gzip", "gzip": "gzip", "tgz": "gzip", "bz2": "bz2", "bz": "bz2", "tbz2": "bz2"
}  # fmt: skip


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


def read_up_to(read: Callable[[int], bytes], size: int) -> bytes:
    """Up to ``size`` bytes from ``read``, calling it until it has them or the file ends."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0 and (part := read(remaining)):
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def detect_compression(head: bytes, name: str) -> Compression:
    """The compression of a file whose first bytes are ``head`` (see :class:`SourceFile`)."""
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
        head = read_up_to(handle.read, HEAD_BYTES)
    return SourceFile(
        path=resolved,
        compression=detect_compression(head, resolved.name),
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
            head = read_up_to(handle.read, size)
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
            data = read_up_to(handle.read, offset - start)
    except OSError:
        return None
    if len(data) != offset - start:
        return None
    return hashlib.sha256(data).hexdigest()
