"""Which files to load: expanding the paths, directories and globs a user gives, and the
order rotated logs are read in.

Inside directories and glob matches a file is taken only when its content (decompressed
if need be) begins like JSON, so pointing at a Cowrie log directory leaves out
``cowrie.log`` and other text; a path naming a file is always taken.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from cowrieprocessor.ingest.files import HEAD_BYTES, SourceFile, describe_file
from cowrieprocessor.ingest.reader import Stop, content_chunks

__all__ = ["discover", "sort_key"]

# Editor backups and partial copies: a copy in progress must not be loaded as a log.
_TEMP_SUFFIXES = ("~", ".tmp", ".temp", ".part", ".partial", ".swp", ".swx")
_GLOB_CHARS = re.compile(r"[*?\[]")
_DIGIT_RUNS = re.compile(r"([0-9]+)")
_ROTATION_TAIL = re.compile(r"\.(?:(gz|gzip|bz2|bz)|(0|[1-9][0-9]{0,2}))$", re.IGNORECASE)
# Sorts after every real character, so "cowrie.json" comes after "cowrie.json.<suffix>".
_END_OF_NAME = "\U0010ffff"
_SKIPPED_NAMES_SHOWN = 5


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
        for chunk in content_chunks(handle.read, src.compression, str(src.path)):
            if isinstance(chunk, Stop):
                break
            decoded = (decoded + chunk[:HEAD_BYTES]).lstrip(blank)
            if decoded:
                break
    return not decoded or decoded[:1] in (b"{", b"[")
