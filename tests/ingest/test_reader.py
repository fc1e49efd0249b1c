"""Tests for the input-file side of the loader: discovery, compression, lines and offsets."""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import os
import tracemalloc
import zlib
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowrieprocessor.ingest.discovery import discover, sort_key
from cowrieprocessor.ingest.files import HEAD_BYTES, SourceFile, describe_file, grew_from
from cowrieprocessor.ingest.reader import CHUNK_BYTES, Line, ReadProblem, _split_lines, read_lines
from tests import conftest

# Resolved: discover() reports resolved paths, and the shared folder may be a link.
SHARED_LOGS = conftest.SHARED_LOGS.resolve()

# Forty lines of varying length, a blank line among them, the last one terminated.
LINES = [
    b'{"eventid":"cowrie.session.connect","session":"%04d","pad":"%s"}' % (i, b"x" * (i * 7))
    for i in range(40)
]
LINES[17] = b""
CONTENT = b"".join(line + b"\n" for line in LINES)


def expected_lines(content: bytes, first_number: int = 1, base: int = 0) -> list[Line]:
    """The Line records a correct reader yields for ``content`` starting at ``base``."""
    result = []
    pos = 0
    number = first_number
    while pos < len(content):
        newline = content.find(b"\n", pos)
        terminated = newline >= 0
        end = newline + 1 if terminated else len(content)
        data = content[pos : end - 1 if terminated else end]
        if data.endswith(b"\r"):
            data = data[:-1]
        result.append(Line(number, base + pos, base + end, data, terminated))
        number += 1
        pos = end
    return result


def items(src: SourceFile, **kwargs: int) -> list[Line | ReadProblem]:
    return list(read_lines(src, **kwargs))


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "compression"),
    [
        ("cowrie.json", CONTENT, "none"),
        ("cowrie.json.6.gz", gzip.compress(CONTENT), "gzip"),
        ("cowrie.json.1.bz2", bz2.compress(CONTENT), "bz2"),
        ("cowrie.json.2018-06-13", gzip.compress(CONTENT), "gzip"),  # gzip without .gz
        ("cowrie.json.1.gz.1.gz", CONTENT, "none"),  # plain text named .gz
        ("cowrie.json.gz", bz2.compress(CONTENT), "bz2"),  # bz2 named .gz
        ("empty.json.gz", b"", "gzip"),  # 0 bytes: the name decides
        ("empty.json.1.bz2", b"", "bz2"),
        ("empty.json", b"", "none"),
        ("cut.gz", b"\x1f", "gzip"),  # a cut-off magic, named as an archive
        ("cut.json", b"\x1f", "none"),
        ("cut.bz2", b"BZ", "bz2"),
    ],
)
def test_describe_file_detects_compression_from_magic_bytes(
    tmp_path: Path, name: str, data: bytes, compression: str
) -> None:
    path = write(tmp_path / name, data)

    src = describe_file(path)

    assert src == SourceFile(
        path=path.resolve(),
        compression=compression,
        size=len(data),
        head_sha256=hashlib.sha256(data[:HEAD_BYTES]).hexdigest(),
    )


def test_head_sha256_covers_only_the_first_4096_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "big.json", CONTENT * 20)
    before = describe_file(path)
    with path.open("ab") as handle:
        handle.write(b'{"more":1}\n')

    after = describe_file(path)

    assert len(CONTENT) * 20 > HEAD_BYTES
    assert before.head_sha256 == hashlib.sha256((CONTENT * 20)[:4096]).hexdigest()
    assert after.head_sha256 == before.head_sha256
    assert after.size == before.size + 11
    assert describe_file(write(tmp_path / "zero", b"")).head_sha256 == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_grew_from_tells_growth_from_replacement(tmp_path: Path) -> None:
    small = write(tmp_path / "live.json", CONTENT[:1000])
    first = describe_file(small)

    write(small, CONTENT[:1000] + CONTENT[:4000])  # grew past HEAD_BYTES
    grown = describe_file(small)
    assert grown.head_sha256 != first.head_sha256  # the head digest alone cannot tell
    assert grew_from(grown, first.size, first.head_sha256) is True

    write(small, b"X" + CONTENT[1:5000])  # rewritten and larger
    assert grew_from(describe_file(small), first.size, first.head_sha256) is False

    write(small, CONTENT[:500])  # truncated
    assert grew_from(describe_file(small), first.size, first.head_sha256) is False

    large = write(tmp_path / "large.json", CONTENT * 10)
    before = describe_file(large)
    with large.open("ab") as handle:
        handle.write(CONTENT)
    assert grew_from(describe_file(large), before.size, before.head_sha256) is True
    write(large, b"Y" + (CONTENT * 11)[1:])
    assert grew_from(describe_file(large), before.size, before.head_sha256) is False


# ---------------------------------------------------------------------------------------
# Discovery and order
# ---------------------------------------------------------------------------------------


def test_sort_key_orders_rotated_names_oldest_first() -> None:
    names = [
        "cowrie.json",
        "cowrie.json.1",
        "cowrie.json.1.gz.1.gz",
        "cowrie.json.2.gz",
        "cowrie.json.6.gz",
        "cowrie.json.10.gz",
        "cowrie.json.2017_11_14",
        "cowrie.json.2017_11_4",
        "cowrie.json.2018-06-13",
        "cowrie.json.2018-06-14.gz",
        "cowrie_2017-01-03T062830.json.gz",
        "cowrie_2017-01-03T024647.json.gz",
        "log.2018.06.13",
        "log.2018.06.2",
    ]

    ordered = sorted(names, key=lambda name: sort_key(Path("/logs") / name))

    assert ordered == [
        "cowrie.json.2017_11_4",
        "cowrie.json.2017_11_14",
        "cowrie.json.2018-06-13",
        "cowrie.json.2018-06-14.gz",
        "cowrie.json.10.gz",
        "cowrie.json.6.gz",
        "cowrie.json.2.gz",
        "cowrie.json.1.gz.1.gz",
        "cowrie.json.1",
        "cowrie.json",
        "cowrie_2017-01-03T024647.json.gz",
        "cowrie_2017-01-03T062830.json.gz",
        "log.2018.06.2",
        "log.2018.06.13",
    ]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "logs"
    for name in [
        "cowrie.json",
        "cowrie.json.1",
        "cowrie.json.2017_11_4",
        "cowrie.json.2017_11_14",
        "cowrie.json.2018-06-13",
        "sub/dir/a.json",
        ".hidden.json",
        ".git/objects.json",
        "cowrie.json.tmp",
        "cowrie.json~",
    ]:
        write(root / name, CONTENT)
    for name in ["cowrie.json.6.gz", "cowrie.json.1.gz.1.gz", "cowrie_2017-01-03T062830.json.gz"]:
        write(root / name, gzip.compress(CONTENT))
    write(root / "cowrie.json.2.bz2", bz2.compress(CONTENT))
    write(root / "empty.gz", b"")
    write(root / "cowrie.log", b"2018-06-13T00:00:01+0000 [cowrie] New connection\n")
    write(root / "README.md", b"# logs\n")
    write(root / "malware.bin", gzip.compress(b"\x7fELF\x02\x01\x01\x00"))
    return root


def test_discover_walks_a_tree_skipping_hidden_temp_and_non_json(tree: Path) -> None:
    files, messages = discover([str(tree)])

    assert [src.path.relative_to(tree.resolve()).as_posix() for src in files] == [
        "cowrie.json.2017_11_4",
        "cowrie.json.2017_11_14",
        "cowrie.json.2018-06-13",
        "cowrie.json.6.gz",
        "cowrie.json.2.bz2",
        "cowrie.json.1.gz.1.gz",
        "cowrie.json.1",
        "cowrie.json",
        "cowrie_2017-01-03T062830.json.gz",
        "empty.gz",
        "sub/dir/a.json",
    ]
    assert [src.compression for src in files] == [
        *["none"] * 3,
        "gzip",
        "bz2",
        "gzip",
        "none",
        "none",
        "gzip",
        "gzip",
        "none",
    ]
    assert messages == [
        f"{str(tree)!r}: skipped 3 file(s) that do not start with a JSON object: "
        "'README.md', 'cowrie.log', 'malware.bin'"
    ]


def test_discover_globs_explicit_files_duplicates_and_missing_paths(tree: Path) -> None:
    inputs = [
        str(tree / "cowrie.json.*.gz"),
        str(tree / "**" / "a.json"),
        str(tree / "cowrie.json"),
        str(tree / "cowrie.json"),  # the same file twice
        str(tree / "." / "cowrie.json"),  # and under another spelling
        str(tree / "README.md"),  # named explicitly: taken whatever it holds
        str(tree / "nope.json"),
        str(tree / "*.xz"),
    ]

    files, messages = discover(inputs)

    assert [src.path.relative_to(tree.resolve()).as_posix() for src in files] == [
        "cowrie.json.6.gz",
        "cowrie.json.1.gz.1.gz",
        "cowrie.json",
        "README.md",
        "sub/dir/a.json",
    ]
    assert messages == [
        f"{str(tree / 'nope.json')!r}: no such file or directory",
        f"{str(tree / '*.xz')!r}: pattern matched no files",
    ]


def test_discover_resolves_symlinks_and_reports_empty_directories(tmp_path: Path) -> None:
    real = write(tmp_path / "real" / "cowrie.json", CONTENT)
    (tmp_path / "link.json").symlink_to(real)
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.json").symlink_to(tmp_path / "missing.json")

    files, messages = discover([str(tmp_path / "link.json"), str(real), str(tmp_path / "empty")])
    broken_files, broken_messages = discover([str(tmp_path / "broken.json")])

    assert [src.path for src in files] == [real.resolve()]
    assert messages == [f"{str(tmp_path / 'empty')!r}: directory holds no log files"]
    assert broken_files == []
    assert broken_messages == [
        f"{str(tmp_path / 'broken.json')!r}: cannot open: No such file or directory"
    ]


# ---------------------------------------------------------------------------------------
# Reading lines
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "encode"),
    [
        ("cowrie.json", lambda data: data),
        ("cowrie.json.gz", gzip.compress),
        ("cowrie.json.bz2", bz2.compress),
        ("cowrie.json.2018-06-13", gzip.compress),  # gzip named without .gz
        ("cowrie.json.1.gz.1.gz", lambda data: data),  # plain named .gz
        ("multi.json.gz", lambda d: gzip.compress(d[:1000]) + gzip.compress(d[1000:])),
        ("padded.json.gz", lambda d: gzip.compress(d) + b"\x00" * 512),
        ("multi.json.bz2", lambda d: bz2.compress(d[:777]) + bz2.compress(d[777:])),
    ],
)
def test_every_kind_of_file_yields_the_same_lines(
    tmp_path: Path, name: str, encode: Callable[[bytes], bytes]
) -> None:
    src = describe_file(write(tmp_path / name, encode(CONTENT)))

    got = items(src)

    assert got == expected_lines(CONTENT)
    assert len(got) == 40
    assert got[17] == Line(18, got[16].end, got[16].end + 1, b"", True)
    assert got[-1].end == len(CONTENT)


def test_crlf_blank_lines_and_final_line_without_newline(tmp_path: Path) -> None:
    src = describe_file(write(tmp_path / "live.json", b'{"a":1}\r\n\r\n\n{"b":"\r"}\n{"c":3'))

    assert items(src) == [
        Line(1, 0, 9, b'{"a":1}', True),
        Line(2, 9, 11, b"", True),
        Line(3, 11, 12, b"", True),
        Line(4, 12, 22, b'{"b":"\r"}', True),
        Line(5, 22, 28, b'{"c":3', False),
    ]


def test_empty_files(tmp_path: Path) -> None:
    archive = describe_file(write(tmp_path / "cowrie.json.1.gz", b""))
    plain = describe_file(write(tmp_path / "cowrie.json", b""))

    problems = items(archive)

    assert items(plain) == []
    assert problems == [
        ReadProblem(
            1,
            0,
            "empty_archive",
            f"{archive.path}: 0-byte file named as a gzip archive",
        )
    ]


def test_truncated_gzip_yields_lines_before_the_cut_then_the_partial_then_a_problem(
    tmp_path: Path,
) -> None:
    original = SHARED_LOGS / "hrbrmstr-rstudioconf2017" / "cowrie_2017-01-03T062830.json.gz"
    raw = original.read_bytes()
    content = gzip.decompress(raw)
    src = describe_file(write(tmp_path / original.name, raw[: len(raw) // 2]))

    got = items(src)

    *lines, partial, problem = got
    assert isinstance(problem, ReadProblem)
    assert problem.reason == "truncated_archive"
    assert str(src.path) in problem.detail
    # Every byte decoded before the cut comes out, in order, as complete lines and then
    # the cut-off start of the next one.
    assert isinstance(partial, Line)
    assert partial.terminated is False
    assert problem.offset == partial.end
    assert problem.number == partial.number == len(lines) + 1
    decoded = content[: problem.offset]
    assert lines == expected_lines(decoded)[:-1]
    assert partial == expected_lines(decoded)[-1]
    assert 1000 < len(lines) < 2702
    assert content[partial.start : partial.end] == partial.data
    assert content[partial.end : partial.end + 1] != b"\n"


def test_truncated_gzip_cut_at_a_line_end_yields_no_partial_line(tmp_path: Path) -> None:
    # A sync flush makes the bytes written so far decodable on their own, like a writer
    # killed right after flushing a complete line.
    cut_at = CONTENT.index(b"\n", 400) + 1
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    data = compressor.compress(CONTENT[:cut_at]) + compressor.flush(zlib.Z_SYNC_FLUSH)
    src = describe_file(write(tmp_path / "cut.json.gz", data))

    got = items(src)

    assert got[:-1] == expected_lines(CONTENT[:cut_at])
    assert got[-1] == ReadProblem(
        len(got),
        cut_at,
        "truncated_archive",
        f"{src.path}: gzip member 1 ends before its end-of-stream marker (truncated archive)",
    )


def test_damaged_bz2_block_keeps_the_good_blocks_before_it(tmp_path: Path) -> None:
    content = b"".join(
        b'{"n":%d,"h":"%s"}\n' % (i, hashlib.sha256(b"%d" % i).hexdigest().encode())
        for i in range(30000)
    )
    packed = bytearray(bz2.compress(content, compresslevel=1))  # 100 kB blocks
    packed[len(packed) * 3 // 4] ^= 0x55
    src = describe_file(write(tmp_path / "damaged.json.bz2", bytes(packed)))

    got = items(src)

    *lines, problem = got
    assert isinstance(problem, ReadProblem)
    assert problem.reason == "corrupt_archive"
    decoded = content[: problem.offset]
    assert lines == expected_lines(decoded)
    # Every block before the damaged one came out: at least half of the text.
    assert len(content) // 2 < problem.offset < len(content)


def test_corrupt_archives(tmp_path: Path) -> None:
    packed = bytearray(bz2.compress(CONTENT))
    packed[len(packed) // 2] ^= 0xFF
    flipped = describe_file(write(tmp_path / "flipped.json.bz2", bytes(packed)))
    garbage = describe_file(write(tmp_path / "garbage.bz2", b"BZh9" + b"\x42" * 200))
    gz = bytearray(gzip.compress(CONTENT))
    gz[-8] ^= 0xFF  # the CRC in the trailer: all data decodes, the check fails
    bad_crc = describe_file(write(tmp_path / "bad_crc.json.gz", bytes(gz)))
    trailing = describe_file(write(tmp_path / "trailing.gz", gzip.compress(CONTENT) + b"junk"))

    flipped_items = items(flipped)
    garbage_items = items(garbage)
    bad_crc_items = items(bad_crc)
    trailing_items = items(trailing)

    # bz2 checks a whole block before releasing any of it: nothing comes out.
    assert [(p.number, p.offset, p.reason) for p in flipped_items] == [(1, 0, "corrupt_archive")]
    assert [(p.number, p.offset, p.reason) for p in garbage_items] == [(1, 0, "corrupt_archive")]
    assert bad_crc_items[:-1] == expected_lines(CONTENT)
    assert bad_crc_items[-1] == ReadProblem(
        41,
        len(CONTENT),
        "corrupt_archive",
        f"{bad_crc.path}: corrupt gzip data in member 1: "
        "Error -3 while decompressing data: incorrect data check",
    )
    assert trailing_items[:-1] == expected_lines(CONTENT)
    last = trailing_items[-1]
    assert isinstance(last, ReadProblem)
    assert (last.number, last.offset, last.reason) == (41, len(CONTENT), "corrupt_archive")
    assert "member 2" in last.detail


def test_unreadable_file_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    src = describe_file(write(tmp_path / "gone.json", CONTENT))
    src.path.unlink()
    directory = SourceFile(tmp_path, "none", 0, hashlib.sha256(b"").hexdigest())

    gone = items(src, start_offset=100, start_line=3)
    is_dir = items(directory)

    assert [(p.number, p.offset, p.reason) for p in gone] == [(4, 100, "unreadable")]
    assert [(p.number, p.offset, p.reason) for p in is_dir] == [(1, 0, "unreadable")]
    assert str(src.path) in gone[0].detail


def test_unsupported_archives_are_reported_not_read_as_text(tmp_path: Path) -> None:
    xz = describe_file(write(tmp_path / "cowrie.json.xz", b"\xfd7zXZ\x00\x00\x04" + b"\x00" * 40))
    zst = describe_file(write(tmp_path / "cowrie.json.zst", b"\x28\xb5\x2f\xfd" + b"\x01" * 9))

    assert xz.compression == zst.compression == "none"
    assert items(xz) == [
        ReadProblem(
            1, 0, "unreadable", f"{xz.path}: xz compression is not supported; decompress it"
        )
    ]
    assert items(zst) == [
        ReadProblem(
            1, 0, "unreadable", f"{zst.path}: zstd compression is not supported; decompress it"
        )
    ]


def test_lines_are_frozen_and_compare_by_value(tmp_path: Path) -> None:
    line = items(describe_file(write(tmp_path / "one.json", b"{}\n")))[0]

    assert line == Line(1, 0, 3, b"{}", True)
    assert hash(line) == hash(Line(1, 0, 3, b"{}", True))
    with pytest.raises(dataclasses.FrozenInstanceError):
        line.end = 4  # type: ignore[misc]


@pytest.mark.parametrize("encode", [lambda d: d, gzip.compress, bz2.compress])
def test_resume_from_an_offset_gives_exactly_the_remaining_lines(
    tmp_path: Path, encode: Callable[[bytes], bytes]
) -> None:
    src = describe_file(write(tmp_path / "resume.json.x", encode(CONTENT)))
    everything = items(src)
    middle = everything[24]
    assert isinstance(middle, Line)

    rest = items(src, start_offset=middle.start, start_line=24)
    at_end = items(src, start_offset=len(CONTENT), start_line=40)
    beyond = items(src, start_offset=len(CONTENT) + 10, start_line=40)

    assert rest == everything[24:]
    assert rest[0] == Line(25, middle.start, middle.end, LINES[24], True)
    assert rest == expected_lines(CONTENT[middle.start :], first_number=25, base=middle.start)
    assert at_end == []
    assert beyond == []


def test_resume_a_live_file_after_it_grew(tmp_path: Path) -> None:
    path = write(tmp_path / "cowrie.json", CONTENT[:1000])
    first = items(describe_file(path))
    last_complete = [line for line in first if isinstance(line, Line) and line.terminated][-1]
    write(path, CONTENT)

    rest = items(
        describe_file(path), start_offset=last_complete.end, start_line=last_complete.number
    )

    assert first[-1].terminated is False
    assert first[:-1] + rest == expected_lines(CONTENT)


def test_resume_past_the_damage_of_a_truncated_gzip_reports_where_decoding_stopped(
    tmp_path: Path,
) -> None:
    raw = gzip.compress(CONTENT)
    src = describe_file(write(tmp_path / "cut.json.gz", raw[: len(raw) // 2]))
    problem = items(src)[-1]
    assert isinstance(problem, ReadProblem)

    again = items(src, start_offset=len(CONTENT) - 10, start_line=39)

    assert again == [ReadProblem(40, problem.offset, "truncated_archive", problem.detail)]


def test_crlf_split_across_two_read_chunks(tmp_path: Path) -> None:
    # The \r is the last byte of the first 1 MiB read and the \n the first of the next.
    first = b"a" * (CHUNK_BYTES - 1) + b"\r\n"
    src = describe_file(write(tmp_path / "crlf.json", first + b"b\r\n"))

    assert items(src) == [
        Line(1, 0, CHUNK_BYTES + 1, b"a" * (CHUNK_BYTES - 1), True),
        Line(2, CHUNK_BYTES + 1, CHUNK_BYTES + 4, b"b", True),
    ]


@settings(max_examples=300, deadline=None)
@given(
    content=st.lists(st.sampled_from([b"a", b"bb", b"\r", b"\n", b"\r\n", b"{}"])).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=64), max_size=8),
    max_line_bytes=st.integers(min_value=1, max_value=6),
    start=st.integers(min_value=0, max_value=3),
)
def test_splitting_is_independent_of_chunk_boundaries(
    content: bytes, cuts: list[int], max_line_bytes: int, start: int
) -> None:
    bounds = sorted({0, len(content), *(cut for cut in cuts if cut < len(content))})
    chunks = [content[a:b] for a, b in pairwise(bounds)]

    got = list(_split_lines(iter(chunks), "f", 100, start, max_line_bytes))

    expected: list[tuple[object, ...]] = []
    for line in expected_lines(content, first_number=start + 1, base=100):
        if len(line.data) > max_line_bytes:
            expected.append(("too long", line.number, line.start))
        else:
            expected.append(
                ("line", line.number, line.start, line.end, line.data, line.terminated)
            )
    assert [
        ("line", item.number, item.start, item.end, item.data, item.terminated)
        if isinstance(item, Line)
        else ("too long", item.number, item.offset)
        for item in got
    ] == expected


def test_discover_odd_inputs(tree: Path) -> None:
    fifo = tree / "sub" / "dir" / "pipe.json"
    os.mkfifo(fifo)  # a FIFO would block a reader forever

    files, messages = discover(["", str(tree / "su*"), str(fifo)])

    assert [src.path.name for src in files] == ["a.json"]  # via the glob's directory
    assert messages == ["'': empty path", f"{str(fifo)!r}: not a regular file"]


def test_line_length_limit_counts_content_not_line_ends(tmp_path: Path) -> None:
    data = b"0123456789\r\n" + b"0123456789A\n" + b"x\n" + b"0123456789A"
    src = describe_file(write(tmp_path / "limit.json", data))

    got = items(src, max_line_bytes=10)

    assert got == [
        Line(1, 0, 12, b"0123456789", True),
        ReadProblem(
            2,
            12,
            "line_too_long",
            f"{src.path}: line 2 has 11 bytes, over the 10-byte limit; skipped",
        ),
        Line(3, 24, 26, b"x", True),
        ReadProblem(
            4,
            26,
            "line_too_long",
            f"{src.path}: line 4 has 11 bytes, unterminated at end of input, over the "
            "10-byte limit; skipped",
        ),
    ]


@pytest.mark.parametrize("compress", [False, True])
def test_a_20_mb_line_is_skipped_with_flat_memory(tmp_path: Path, compress: bool) -> None:
    huge = 20 * 1024 * 1024
    path = tmp_path / ("huge.json.gz" if compress else "huge.json")
    with gzip.open(path, "wb", compresslevel=1) if compress else path.open("wb") as handle:
        handle.write(b'{"a":1}\n')
        block = b"y" * (1024 * 1024)
        for _ in range(huge // len(block)):
            handle.write(block)
        handle.write(b'\n{"b":2}\n' + b"z" * 3 * 1024 * 1024)
    src = describe_file(path)

    tracemalloc.start()
    try:
        got = items(src, max_line_bytes=1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    second_end = 8 + huge + 1
    assert got == [
        Line(1, 0, 8, b'{"a":1}', True),
        ReadProblem(
            2,
            8,
            "line_too_long",
            f"{src.path}: line 2 has {huge} bytes, over the 1048576-byte limit; skipped",
        ),
        Line(3, second_end, second_end + 8, b'{"b":2}', True),
        ReadProblem(
            4,
            second_end + 8,
            "line_too_long",
            f"{src.path}: line 4 has {3 * 1024 * 1024} bytes, unterminated at end of input, "
            "over the 1048576-byte limit; skipped",
        ),
    ]
    assert peak < 6 * 1024 * 1024, peak


def test_bad_arguments_raise() -> None:
    src = SourceFile(Path("/nonexistent"), "none", 0, "")
    with pytest.raises(ValueError, match="start_offset >= 0"):
        next(read_lines(src, start_offset=-1))
    with pytest.raises(ValueError, match="max_line_bytes >= 1"):
        next(read_lines(src, max_line_bytes=0))


# ---------------------------------------------------------------------------------------
# The real shared logs (SOURCES.md, "lines" column)
# ---------------------------------------------------------------------------------------

SHARED_LINE_COUNTS = {
    "kareiva-cowrie-logs/cowrie.json.2018-05-24": 1937,
    "kareiva-cowrie-logs/cowrie.json.2018-06-13": 3989,
    "kareiva-cowrie-logs/cowrie.json.2018-06-15": 3650,
    "kareiva-cowrie-logs/cowrie.json.2018-06-16": 5915,
    "hrbrmstr-rstudioconf2017/cowrie_2017-01-03T062830.json.gz": 2702,
    "scriptzteam-realtime-ssh-honeypot-v1.5/cowrie.json.2017_11_4": 3833,
    "scriptzteam-realtime-ssh-honeypot-v1.5/cowrie.json": 6074,
    "pol-alvarezzz-cloud-cowrie-honeypot/cowrie.json.2026-03-19": 656,
    "pol-alvarezzz-cloud-cowrie-honeypot/cowrie.json.2026-03-20": 1435,
    "shaun-schwartz-rails-cowrie-log-parser/cowrie.json.500_lines": 501,
}


def test_shared_logs_line_counts_match_sources_md() -> None:
    files, messages = discover([str(SHARED_LOGS)])

    assert [src.path.relative_to(SHARED_LOGS).as_posix() for src in files] == [
        "hrbrmstr-rstudioconf2017/cowrie_2017-01-03T062830.json.gz",
        "kareiva-cowrie-logs/cowrie.json.2018-05-24",
        "kareiva-cowrie-logs/cowrie.json.2018-06-13",
        "kareiva-cowrie-logs/cowrie.json.2018-06-15",
        "kareiva-cowrie-logs/cowrie.json.2018-06-16",
        "pol-alvarezzz-cloud-cowrie-honeypot/cowrie.json.2026-03-19",
        "pol-alvarezzz-cloud-cowrie-honeypot/cowrie.json.2026-03-20",
        "scriptzteam-realtime-ssh-honeypot-v1.5/cowrie.json.2017_11_4",
        "scriptzteam-realtime-ssh-honeypot-v1.5/cowrie.json",
        "shaun-schwartz-rails-cowrie-log-parser/cowrie.json.500_lines",
    ]
    assert messages == [
        f"{str(SHARED_LOGS)!r}: skipped 1 file(s) that do not start with a JSON object: "
        "'SOURCES.md'"
    ]
    counts = {}
    for src in files:
        got = items(src)
        assert all(isinstance(line, Line) for line in got)
        unterminated = [line.number for line in got if not line.terminated]
        counts[src.path.relative_to(SHARED_LOGS).as_posix()] = (len(got), unterminated)
        if src.compression == "none":
            assert got[-1].end == src.size
        else:
            assert src.compression == "gzip"
            assert got[-1].end == 1_060_684
    assert counts == {
        name: (count, [6074] if name.endswith("v1.5/cowrie.json") else [])
        for name, count in SHARED_LINE_COUNTS.items()
    }


def test_shared_live_file_ends_in_a_cut_off_event() -> None:
    src = describe_file(SHARED_LOGS / "scriptzteam-realtime-ssh-honeypot-v1.5" / "cowrie.json")

    last = items(src, start_offset=0)[-1]

    assert isinstance(last, Line)
    assert (last.number, last.end, last.terminated) == (6074, 4_141_056, False)
    # SOURCES.md says the line ends in '"src_p'; the file itself ends as asserted here.
    assert last.data.endswith(b'91.195.103.185", "isError": 0, ')
    assert os.path.getsize(src.path) == src.size == 4_141_056
