"""Unit tests for the Cowrie event parser: one small line per quirk, every field asserted."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import pickle
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from cowrieprocessor.db.textrule import ESCAPE, decode_json
from cowrieprocessor.ingest.eventids import EventKind, kind_of
from cowrieprocessor.ingest.events import (
    MAX_LINE_BYTES,
    EventError,
    ParsedEvent,
    canonical_hash,
    parse_line,
)
from tests.conftest import SHARED_LOGS
from tests.shared_logs import EVENT_MIX

# Every ParsedEvent field except the payload and its hash, all None: each case states
# only the fields it expects to be set, and the test compares the whole record.
_ALL_NONE: dict[str, Any] = {
    field.name: None
    for field in dataclasses.fields(ParsedEvent)
    if field.name not in ("payload", "event_hash", "payload_json")
}
_ALL_NONE["problems"] = ()

T0 = datetime(2018, 5, 24, 0, 7, 26, 106328, tzinfo=UTC)
SID = "abcdef012345"
SHA_DL = "9cc38c074833ea871c81324d0b55efe66e71a301d6c24cbed745b9a33f3dccc5"
SHA_UP = "94f2e4d8d4436874785cd14e6e6d403507b8750852f7f2040352069a75da4c00"
# sha256 of the UTF-8 bytes of a few passwords, computed with `printf ... | sha256sum`.
SHA_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SHA_ROOT = "4813494d137e1631bba301d5acab6e7bb7aa74ce1185d456565ef51d737677b2"
SHA_SYSTEM_NUL = "4640409de0d747cb8301bbb401176ab3c93490258a4c5acfca3189a6686f1e08"
SHA_ANDZEJS = "305b085a5dd7154162393a78bf64e22b20d92911cc4b7eef812f4ca2c683f83b"
SHA_ADMINISTRATOR_UMLAUT = "c9cb462b84f5d7ee1b2d5ba966ac7981a331a5dedacbf23f79b19b3ef4e76afd"
SHA_ADMIN_TABS = "6cb06817aebd4b225ee064772704c7b55809aac863140e01a6b0f95e414ff11d"
SHA_SURROGATE_D800 = "91a681b998555fb475479817b126c94e57e52011fa1842c5d188795a4a05226b"  # ED A0 80
NUL = ESCAPE + "0"
CON, CLOSED = EventKind.SESSION_CONNECT, EventKind.SESSION_CLOSED
# fmt: off
FAILED, DL, DL_FAILED, UP = (
    EventKind.LOGIN_FAILED, EventKind.FILE_DOWNLOAD, EventKind.FILE_DOWNLOAD_FAILED,
    EventKind.FILE_UPLOAD,
)
# fmt: on


def _fields(event: ParsedEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in _ALL_NONE}


def _ev(kind: EventKind, eventid: str | None = None, **fields: Any) -> dict[str, Any]:
    """Expected fields of an event of _line's defaults; ``eventid`` defaults to the
    current Cowrie id of ``kind``."""
    expected = dict(_ALL_NONE, kind=kind, eventid=eventid or "cowrie." + kind.value)
    expected.update(sensor="s1", session_id=SID, event_time=T0, src_ip="1.2.3.4")
    expected.update(src_ip_valid=True)
    expected.update(fields)
    return expected


def _line(eventid: str | EventKind, **fields: Any) -> bytes:
    """An event line in Cowrie 1.x style (", " separators) with common defaults."""
    if isinstance(eventid, EventKind):
        eventid = "cowrie." + eventid.value
    event = {"eventid": eventid, "timestamp": "2018-05-24T00:07:26.106328Z"}
    event.update(src_ip="1.2.3.4", session=SID, sensor="s1")
    event.update(fields)
    return json.dumps(event).encode()


def _case(name: str, line: bytes, expected: dict[str, Any]) -> Any:
    return pytest.param(line, expected, id=name)


# Compact tables: one case per entry, laid out by hand.
# fmt: off
SESSION_CASES = [
    _case(
        "connect_1x_with_protocol",
        rb'{"eventid": "cowrie.session.connect", "src_ip": "1.2.3.4", "src_port": 34824, '
        rb'"timestamp": "2018-05-24T00:07:26.106328Z", "dst_ip": "172.17.0.3", '
        rb'"system": "cowrie.ssh.factory.CowrieSSHFactory", "protocol": "ssh", '
        rb'"isError": 0, "session": "abcdef012345", "dst_port": 2222, "sensor": "s1"}',
        _ev(CON, protocol="ssh"),
    ),
    _case(
        "old_8hex_session_telnet_only_in_system",
        rb'{"eventid": "cowrie.login.success", "username": "root", '
        rb'"timestamp": "2017-01-03T05:29:29.360125Z", '
        rb'"system": "CowrieTelnetTransport,12,5.6.7.8", "isError": 0, '
        rb'"src_ip": "5.6.7.8", "session": "61c0eaa5", "password": "", "sensor": "ip-1"}',
        _ev(EventKind.LOGIN_SUCCESS, sensor="ip-1", session_id="61c0eaa5", src_ip="5.6.7.8",
            event_time=datetime(2017, 1, 3, 5, 29, 29, 360125, tzinfo=UTC), protocol="telnet",
            username="root", password="", password_sha256=SHA_EMPTY),
    ),
    _case(
        "ssh_only_in_system",
        _line(CON, system="SSHService 'ssh-userauth' on HoneyPotSSHTransport,5195,1.2.3.4"),
        _ev(CON, protocol="ssh"),
    ),
    _case(
        "telnet_factory_system",
        _line(CON, system="cowrie.telnet.transport.HoneyPotTelnetFactory"),
        _ev(CON, protocol="telnet"),
    ),
    _case(
        "protocol_field_wins_over_system",
        _line(CON, protocol="Telnet", system="HoneyPotSSHTransport,1,1.2.3.4"),
        _ev(CON, protocol="telnet"),
    ),
    _case("duration_float", _line(CLOSED, duration=300.2917392253876),
          _ev(CLOSED, duration_seconds=300.2917392253876)),
    _case("duration_string", _line(CLOSED, duration="2.0", protocol="ssh"),
          _ev(CLOSED, duration_seconds=2.0, protocol="ssh")),
    _case("duration_ms_int", _line(CLOSED, duration_ms=2500), _ev(CLOSED, duration_seconds=2.5)),
    _case("duration_ms_string", _line(CLOSED, duration_ms="120000"),
          _ev(CLOSED, duration_seconds=120.0)),
    _case("duration_ms_wins", _line(CLOSED, duration="9.0", duration_ms=1000),
          _ev(CLOSED, duration_seconds=1.0)),
    _case("duration_missing", _line(CLOSED), _ev(CLOSED, problems=("missing_duration",))),
    _case("duration_garbage", _line(CLOSED, duration="two seconds"),
          _ev(CLOSED, problems=("bad_duration",))),
    _case("duration_negative", _line(CLOSED, duration=-1.5),
          _ev(CLOSED, problems=("bad_duration",))),
    _case("duration_boolean", _line(CLOSED, duration=True),
          _ev(CLOSED, problems=("bad_duration",))),
    _case(
        "direct_tcpip_ja4_hostname_dst",
        rb'{"eventid":"cowrie.direct-tcpip.ja4","dst_ip":"google.com","dst_port":443,'
        rb'"ja4":"t12d3112h2_e8f1e7e78f70_64f78f54e6a2","sensor":"s1",'
        rb'"timestamp":"2018-05-24T00:07:26.106328Z","src_ip":"1.2.3.4",'
        rb'"session":"abcdef012345","protocol":"ssh"}',
        _ev(EventKind.DIRECT_TCPIP_JA4, protocol="ssh"),
    ),
    _case(
        "direct_tcpip_request_hostname_dst",
        _line(EventKind.DIRECT_TCPIP_REQUEST, dst_ip="google.com", dst_port=443, src_port=1),
        _ev(EventKind.DIRECT_TCPIP_REQUEST),
    ),
    _case(
        "client_version_tls_garbage_with_nul",
        rb'{"eventid":"cowrie.client.version","version":"\u0016\u0003\u0001\u0000{'
        rb'\u0001\u0000\u0000w\u0003\u0003A`E\\xf4\u0002","sensor":"s1",'
        rb'"timestamp":"2018-05-24T00:07:26.106328Z","src_ip":"1.2.3.4",'
        rb'"session":"abcdef012345","protocol":"ssh"}',
        _ev(EventKind.CLIENT_VERSION, protocol="ssh",
            client_version=f"\x16\x03\x01{NUL}{{\x01{NUL}{NUL}w\x03\x03A`E\\xf4\x02"),
    ),
    _case(
        "client_kex_hassh",
        _line(EventKind.CLIENT_KEX, hassh="7216c7c473918b4f83d1139b3c70dbf9"),
        _ev(EventKind.CLIENT_KEX, hassh="7216c7c473918b4f83d1139b3c70dbf9"),
    ),
    _case("client_malformed_packet", _line(EventKind.CLIENT_MALFORMED_PACKET),
          _ev(EventKind.CLIENT_MALFORMED_PACKET)),
    _case("crlf_line_end", _line(CON) + b"\r\n", _ev(CON)),
]

LOGIN_CASES = [
    _case("plain", _line(FAILED, username="root", password="root"),
          _ev(FAILED, username="root", password="root", password_sha256=SHA_ROOT)),
    _case(
        "nul_in_username_and_password",
        rb'{"eventid": "cowrie.login.failed", "username": "ping 127.0.0.1 -c1 && sh\u0000", '
        rb'"timestamp": "2018-05-24T00:07:26.106328Z", "src_ip": "1.2.3.4", '
        rb'"session": "abcdef012345", "password": "system\u0000", "sensor": "s1"}',
        _ev(FAILED, username="ping 127.0.0.1 -c1 && sh" + NUL, password="system" + NUL,
            password_sha256=SHA_SYSTEM_NUL),
    ),
    _case("lone_surrogates", _line(FAILED, username="x\udbff", password="\ud800"),
          _ev(FAILED, username="x" + ESCAPE + "sDBFF", password=ESCAPE + "sD800",
              password_sha256=SHA_SURROGATE_D800)),
    _case(
        "non_ascii_password_escaped",
        rb'{"eventid": "cowrie.login.failed", "username": "and\u017eejs", '
        rb'"timestamp": "2018-05-24T00:07:26.106328Z", "src_ip": "1.2.3.4", '
        rb'"session": "abcdef012345", "password": "and\u017eejs", "sensor": "s1"}',
        _ev(FAILED, username="andžejs", password="andžejs", password_sha256=SHA_ANDZEJS),
    ),
    _case(
        "non_ascii_password_raw_utf8",
        _line(FAILED, username="root", password="x").replace(b'"x"', "\"administratör\"".encode()),
        _ev(FAILED, username="root", password="administratör",
            password_sha256=SHA_ADMINISTRATOR_UMLAUT),
    ),
    _case(
        "tab_in_username_and_password",
        rb'{"eventid": "cowrie.login.failed", "username": "Admin\t\t", '
        rb'"timestamp": "2018-05-24T00:07:26.106328Z", "src_ip": "1.2.3.4", '
        rb'"session": "abcdef012345", "password": "Admin\t\t", "sensor": "s1"}',
        _ev(FAILED, username="Admin\t\t", password="Admin\t\t", password_sha256=SHA_ADMIN_TABS),
    ),
    _case("pubkey_login_without_password",
          _line(FAILED, username="root", fingerprint="7e:86", key="ssh-ed25519 AAAA"),
          _ev(FAILED, username="root")),
    _case("username_not_text", _line(FAILED, username=["root"], password="root"),
          _ev(FAILED, password="root", password_sha256=SHA_ROOT)),
]

COMMAND_CASES = [
    _case(
        "literal_backslash_x_text",
        rb'{"eventid": "cowrie.command.input", "timestamp": "2018-05-24T00:07:26.106328Z", '
        rb'"src_ip": "1.2.3.4", "session": "abcdef012345", "sensor": "s1", '
        rb'"input": "echo -e \\x47\\x72\\x6f\\x70/ > //.nippon"}',
        _ev(EventKind.COMMAND_INPUT, command="echo -e \\x47\\x72\\x6f\\x70/ > //.nippon"),
    ),
    _case("newline", _line(EventKind.COMMAND_INPUT, input="cd /tmp\n"),
          _ev(EventKind.COMMAND_INPUT, command="cd /tmp\n")),
    _case("legacy_success", _line(EventKind.COMMAND_SUCCESS, input="uname -a"),
          _ev(EventKind.COMMAND_SUCCESS, command="uname -a")),
    _case("failed", _line(EventKind.COMMAND_FAILED, input="lspci"),
          _ev(EventKind.COMMAND_FAILED, command="lspci")),
    _case("escape_mark_itself", _line(EventKind.COMMAND_INPUT, input="a\ue000b"),
          _ev(EventKind.COMMAND_INPUT, command="a" + ESCAPE + "eb")),
]

FILE_CASES = [
    _case("download_with_url",
          _line(DL, shasum=SHA_DL.upper(), url="http://101.254.149.145:6636/tdff",
                outfile=f"dl/{SHA_DL}"),
          _ev(DL, file_direction="download", file_shasum=SHA_DL, transfer_ok=True,
              file_url="http://101.254.149.145:6636/tdff", file_name=f"dl/{SHA_DL}")),
    _case("download_dev_null_redirect_capture",
          _line(DL, shasum=SHA_DL, url="/dev/null", outfile=f"dl/{SHA_DL}"),
          _ev(DL, file_direction="download", file_shasum=SHA_DL, transfer_ok=True,
              file_name=f"dl/{SHA_DL}", problems=("not_a_url",))),
    _case("download_stdin_capture", _line(DL, shasum=SHA_DL, url="stdin", outfile="x"),
          _ev(DL, file_direction="download", file_shasum=SHA_DL, transfer_ok=True,
              file_name="x", problems=("not_a_url",))),
    _case("download_failed_no_shasum_key", _line(DL_FAILED, url="http://mdb7.cn:8081/exp"),
          _ev(DL_FAILED, file_direction="download", file_url="http://mdb7.cn:8081/exp",
              transfer_ok=False)),
    _case("download_failed_shasum_null", _line(DL_FAILED, url="ftp://h/x", shasum=None),
          _ev(DL_FAILED, file_direction="download", file_url="ftp://h/x", transfer_ok=False)),
    _case("download_bad_shasum", _line(DL, url="http://h/x", shasum="abc", outfile="dl/x"),
          _ev(DL, file_direction="download", file_url="http://h/x", file_name="dl/x",
              transfer_ok=True, problems=("bad_shasum",))),
    _case("upload_sftp_filename_and_outfile",
          _line(UP, filename="sshd", outfile=f"var/lib/cowrie/downloads/{SHA_UP}", shasum=SHA_UP),
          _ev(UP, file_direction="upload", file_shasum=SHA_UP, file_name="sshd",
              transfer_ok=True)),
    _case("upload_scp_destfile",
          _line(UP, destfile="/tmp/.x/bot", outfile=f"dl/{SHA_UP}", shasum=SHA_UP),
          _ev(UP, file_direction="upload", file_shasum=SHA_UP, file_name="/tmp/.x/bot",
              transfer_ok=True)),
    _case("upload_outfile_only_with_path_as_url",
          _line(UP, outfile=SHA_UP, url="/tmp/bot", shasum=SHA_UP),
          _ev(UP, file_direction="upload", file_shasum=SHA_UP, file_name=SHA_UP,
              transfer_ok=True)),
    _case("log_closed_tty_shasum_is_not_a_file",
          _line(EventKind.LOG_CLOSED, ttylog=f"var/lib/cowrie/tty/{SHA_UP}", size=44,
                shasum=SHA_UP, duplicate=True, duration="0.3"),
          _ev(EventKind.LOG_CLOSED)),
]

ID_CASES = [
    _case("kippo_login", _line("KIPP0002", username="root", password="root"),
          _ev(EventKind.LOGIN_SUCCESS, "KIPP0002", username="root", password="root",
              password_sha256=SHA_ROOT)),
    _case("kippo_0012_tty_closed", _line("KIPP0012", ttylog="log/tty/x.log"),
          _ev(EventKind.LOG_CLOSED, "KIPP0012")),
    _case("kippo_0012_forward_request", _line("KIPP0012", dst_ip="8.8.8.8", dst_port=53),
          _ev(EventKind.DIRECT_TCPIP_REQUEST, "KIPP0012")),
    _case("spelling_variant", _line("Cowrie.Direct_TCPIP.Request"),
          _ev(EventKind.DIRECT_TCPIP_REQUEST, "Cowrie.Direct_TCPIP.Request")),
    _case("spelling_variant_failed_download",
          _line("cowrie.session.file_download_failed", url="http://h/x"),
          _ev(DL_FAILED, "cowrie.session.file_download_failed", file_direction="download",
              file_url="http://h/x", transfer_ok=False)),
    _case("unknown_eventid_kept", _line("cowrie.something.brand_new", detail=1),
          _ev(EventKind.OTHER, "cowrie.something.brand_new")),
    _case("missing_eventid",
          b'{"timestamp": "2018-05-24T00:07:26.106328Z", "session": "abcdef012345", '
          b'"src_ip": "1.2.3.4", "sensor": "s1"}',
          dict(_ev(EventKind.OTHER), eventid=None, problems=("missing_eventid",))),
    _case("eventid_not_text", _line("x").replace(b'"x"', b"7"),
          dict(_ev(EventKind.OTHER), eventid=None, problems=("bad_eventid",))),
]

ADDRESS_CASES = [
    _case("ipv4_mapped_ipv6", _line(CON, src_ip="::ffff:1.2.3.4"), _ev(CON)),
    _case("ipv6_compressed", _line(CON, src_ip="2001:0DB8:0000:0000:0000:0000:0000:0001"),
          _ev(CON, src_ip="2001:db8::1")),
    _case("invalid_src_ip_kept", _line(CON, src_ip="evil.example"),
          _ev(CON, src_ip="evil.example", src_ip_valid=False, problems=("invalid_src_ip",))),
    _case("src_ip_with_nul", _line(CON, src_ip="1.2.3.4\x00"),
          _ev(CON, src_ip="1.2.3.4" + NUL, src_ip_valid=False, problems=("invalid_src_ip",))),
    _case("src_ip_not_text", _line(CON, src_ip=16909060),
          _ev(CON, src_ip="16909060", src_ip_valid=False, problems=("invalid_src_ip",))),
    _case("no_src_ip", _line(CON, src_ip=None), _ev(CON, src_ip=None, src_ip_valid=None)),
]

CONTEXT_CASES = [
    _case("bad_timestamp_kept", _line(CON, timestamp="yesterday at noon"),
          _ev(CON, event_time=None, problems=("bad_timestamp",))),
    _case("missing_timestamp_session_sensor",
          b'{"eventid": "cowrie.session.closed", "duration": 1.0, "src_ip": "1.2.3.4"}',
          _ev(CLOSED, sensor=None, session_id=None, event_time=None, duration_seconds=1.0,
              problems=("missing_session", "missing_timestamp"))),
    _case("sessionless_plugin_event",
          b'{"eventid": "cowrie.abuseipdb.started", "sensor": "s1", '
          b'"timestamp": "2018-05-24T00:07:26.106328Z"}',
          _ev(EventKind.ABUSEIPDB_STARTED, session_id=None, src_ip=None, src_ip_valid=None)),
    _case("sensor_not_text", _line(CON, sensor=["a"]),
          _ev(CON, sensor=None, problems=("bad_sensor",))),
    _case("empty_sensor_and_session", _line(CON, sensor="", session=""),
          _ev(CON, sensor=None, session_id=None, problems=("missing_session",))),
]

# fmt: on


@pytest.mark.parametrize(
    ("line", "expected"),
    SESSION_CASES
    + LOGIN_CASES
    + COMMAND_CASES
    + FILE_CASES
    + ID_CASES
    + ADDRESS_CASES
    + CONTEXT_CASES,
)
def test_parse_line_fields(line: bytes, expected: dict[str, Any]) -> None:
    event = parse_line(line)

    assert _fields(event) == expected
    # The payload is the line's object with only the text rule applied.
    assert decode_json(event.payload) == json.loads(line)
    canonical = orjson.dumps(event.payload, option=orjson.OPT_SORT_KEYS)
    assert event.event_hash == hashlib.sha256(canonical).hexdigest()
    # The stored JSON text is that same canonical form.
    assert event.payload_json == canonical.decode()


def test_payload_is_unchanged_when_no_rule_applies() -> None:
    line = _line("cowrie.session.closed", duration="2.0", extra={"nested": [1, 2.5, None]})

    event = parse_line(line)

    assert event.payload == json.loads(line)
    assert "duration_seconds" not in event.payload


def test_payload_encodes_keys_and_nested_values() -> None:
    line = rb'{"eventid": "x", "k\u0000": ["v\u0000", {"\ud800": "\ue000"}]}'

    event = parse_line(line)

    assert event.payload == {
        "eventid": "x",
        "k" + ESCAPE + "0": ["v" + ESCAPE + "0", {ESCAPE + "sD800": ESCAPE + "e"}],
    }


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", "empty_line"),
        (b"   \t\r\n", "empty_line"),
        (b"\n", "empty_line"),
        (b"[1, 2]", "not_an_object"),
        (b'"cowrie.session.connect"', "not_an_object"),
        (b"null", "not_an_object"),
        (b"42", "not_an_object"),
        (b'{"eventid": "cowrie.session.connect", "src_p', "invalid_json"),
        (b"{", "invalid_json"),
        (b"not json at all", "invalid_json"),
        (b'{"a": NaN}', "invalid_json"),
        (b'{"a": Infinity}', "invalid_json"),
        (b'{"a": 1e400}', "invalid_json"),
        (b'{"a": "\\ud800", "b": 1e400}', "invalid_json"),
        (b'{"a": "\\ud800", "b": NaN}', "invalid_json"),
        (b'{"a": "caf\xe9"}', "invalid_utf8"),
        (b'{"a": "\xed\xa0\x80"}', "invalid_utf8"),
        (b'{"a": "b"}{"c": "d"}', "invalid_json"),
        (b'{"a": 1' + b"0" * 400 + b"}", "invalid_json"),
        (b'{"s": "\\ud800", "a": 1' + b"0" * 400 + b"}", "invalid_json"),
        (b'{"s": "\\ud800", "a": 1' + b"0" * 5000 + b"}", "invalid_json"),
        (b"[" * 5000 + b"]" * 5000, "invalid_json"),
        (b'{"a":' * 3000 + b"1" + b"}" * 3000, "invalid_json"),
    ],
)
def test_parse_line_rejects(line: bytes, reason: str) -> None:
    with pytest.raises(EventError) as caught:
        parse_line(line)

    assert caught.value.reason == reason
    assert caught.value.detail
    assert str(caught.value).startswith(reason + ": ")


def test_event_error_survives_pickling() -> None:
    with pytest.raises(EventError) as caught:
        parse_line(b"[]")

    copy = pickle.loads(pickle.dumps(caught.value))  # noqa: S301 (our own bytes)

    assert (copy.reason, copy.detail) == ("not_an_object", "the JSON value is an array")
    assert str(copy) == str(caught.value)


def test_fallback_reports_the_real_defect() -> None:
    with pytest.raises(EventError) as caught:
        parse_line(b'{"s": "\\ud800", "t": "cut off')

    assert caught.value.reason == "invalid_json"
    assert caught.value.detail.startswith("Unterminated string")


def test_invalid_utf8_detail_names_the_byte_not_the_text() -> None:
    with pytest.raises(EventError) as caught:
        parse_line(b'{"password": "secret\xff"}')

    assert caught.value.detail == "byte 0xff at offset 20 is not valid UTF-8"


def test_line_too_long() -> None:
    line = b'{"a": "' + b"x" * MAX_LINE_BYTES + b'"}'

    with pytest.raises(EventError) as caught:
        parse_line(line)

    assert caught.value.reason == "line_too_long"
    assert MAX_LINE_BYTES == 16 * 1024 * 1024


def test_line_at_the_limit_is_parsed() -> None:
    filler = MAX_LINE_BYTES - len(b'{"eventid": "cowrie.command.input", "input": ""}')
    line = b'{"eventid": "cowrie.command.input", "input": "' + b"x" * filler + b'"}'
    assert len(line) == MAX_LINE_BYTES

    assert parse_line(line).command == "x" * filler


def test_byte_order_mark_is_ignored() -> None:
    line = _line("cowrie.session.connect")

    assert parse_line(b"\xef\xbb\xbf" + line) == parse_line(line)


def test_surrogate_line_parses_through_fallback_with_the_same_numbers() -> None:
    # The stdlib fallback must read numbers as the orjson path does on the same event
    # (integers beyond 64 bits exact on both), so a line's hash does not depend on which
    # decoder happened to read it.
    plain = parse_line(b'{"n": 18446744073709551615, "m": 18446744073709551616, "f": 1.5}')
    mixed = parse_line(
        b'{"n": 18446744073709551615, "m": 18446744073709551616, "f": 1.5, "s": "\\ud800"}'
    )

    assert plain.payload == {"n": 18446744073709551615, "m": 18446744073709551616, "f": 1.5}
    assert mixed.payload == {**plain.payload, "s": ESCAPE + "sD800"}


# --- hashing --------------------------------------------------------------------------


def test_hash_ignores_spacing_key_order_and_escaping() -> None:
    compact = b'{"eventid":"cowrie.login.failed","username":"and\\u017eejs","password":"x"}'
    spaced = '{"password": "x",  "eventid": "cowrie.login.failed", "username": "andžejs"}'
    indented = b'{\n  "username": "and\\u017Eejs",\n  "password": "\\u0078",\n'
    indented += b'  "eventid": "cowrie\\/login.failed"\n}'.replace(b"\\/", b".")

    hashes = {
        parse_line(compact).event_hash,
        parse_line(spaced.encode()).event_hash,
        parse_line(indented.replace(b"\n", b" ")).event_hash,
    }

    assert len(hashes) == 1


def test_hash_distinguishes_content() -> None:
    a = parse_line(_line("cowrie.login.failed", username="root", password="root"))
    b = parse_line(_line("cowrie.login.failed", username="root", password="root "))
    c = parse_line(_line("cowrie.login.failed", username="root", password="root", n=1))
    d = parse_line(_line("cowrie.login.failed", username="root", password="root", n=1.0))

    assert len({a.event_hash, b.event_hash, c.event_hash, d.event_hash}) == 4


def test_hash_of_nul_differs_from_hash_of_its_encoding() -> None:
    nul = parse_line(rb'{"p": "a\u0000"}')
    look_alike = parse_line(('{"p": "a' + ESCAPE + '0"}').encode())

    assert nul.event_hash != look_alike.event_hash
    assert nul.payload == {"p": "a" + ESCAPE + "0"}
    assert look_alike.payload == {"p": "a" + ESCAPE + "e0"}


def test_canonical_hash_known_value() -> None:
    expected = hashlib.sha256(b'{"a":1,"b":[true,null,"x"]}').hexdigest()

    assert canonical_hash({"b": [True, None, "x"], "a": 1}) == expected


def test_canonical_hash_falls_back_for_big_integers() -> None:
    expected = hashlib.sha256(b'{"a":340282366920938463463374607431768211456}').hexdigest()

    assert canonical_hash({"a": 2**128}) == expected


# --- the event record ------------------------------------------------------------------


def test_parsed_event_is_a_frozen_dataclass() -> None:
    event = parse_line(_line("cowrie.login.failed", username="root", password="x"))

    assert type(event) is ParsedEvent
    assert dataclasses.is_dataclass(ParsedEvent)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.sensor = "other"  # type: ignore[misc]
    replaced = dataclasses.replace(event, sensor="other")
    assert replaced.sensor == "other"
    assert replaced.username == "root"
    rebuilt = ParsedEvent(**{f.name: getattr(event, f.name) for f in dataclasses.fields(event)})
    assert rebuilt == event


def test_parsed_event_survives_pickling() -> None:
    event = parse_line(_line(FAILED, username="root\x00", password="\ud800"))

    copy = pickle.loads(pickle.dumps(event))  # noqa: S301 (our own bytes)

    assert copy == event
    assert type(copy) is ParsedEvent


def test_parsed_event_has_no_instance_dict() -> None:
    event = parse_line(_line("cowrie.session.connect"))

    assert not hasattr(event, "__dict__")


# --- event ids --------------------------------------------------------------------------


def test_every_kind_resolves_from_its_cowrie_id() -> None:
    for kind in EventKind:
        if kind is EventKind.OTHER:
            continue
        assert kind_of("cowrie." + kind.value, {}) is kind
        assert kind_of(kind.value.upper().replace(".", "_"), {}) is kind


def test_every_cowrie_3_id_is_known() -> None:
    # Cowrie's own catalogue of ids (src/cowrie/core/eventids.py, 2026).
    # fmt: off
    catalogue = (
        "abuseipdb.ratelimited", "abuseipdb.reportedip", "abuseipdb.reportfail",
        "abuseipdb.started", "abuseipdb.wakeup", "client.fingerprint", "client.kex",
        "client.malformed_packet", "client.size", "client.var", "client.version",
        "command.chpasswd", "command.failed", "command.input", "command.success",
        "direct-tcpip.data", "direct-tcpip.ja4", "direct-tcpip.ja4h", "direct-tcpip.redirect",
        "direct-tcpip.request", "direct-tcpip.tunnel", "tunnelproxy-tcpip.data",
        "greynoise.result", "log.closed", "log.open", "login.failed", "login.success",
        "proxy.backend_connect_error", "proxy.backend_connected", "proxy.backend_disconnected",
        "proxy.client_disconnect", "proxy.ssh", "reversedns.connect", "reversedns.forward",
        "session.closed", "session.connect", "session.file_download",
        "session.file_download.failed", "session.file_upload", "session.input",
        "session.params", "telnet.error", "telnet.exploit_attempt", "telnet.exploit_success",
        "telnet.option", "urlhaus.submitted", "virustotal.scanfile", "virustotal.scanurl",
    )
    # fmt: on

    kinds = {kind_of("cowrie." + eventid, {}) for eventid in catalogue}

    assert len(catalogue) == 48
    assert EventKind.OTHER not in kinds
    assert kinds == set(EventKind) - {EventKind.OTHER}


@pytest.mark.parametrize(
    ("eventid", "kind"),
    [
        ("KIPP0001", EventKind.SESSION_CONNECT),
        ("KIPP0003", EventKind.LOGIN_FAILED),
        ("KIPP0004", EventKind.LOG_OPEN),
        ("KIPP0005", EventKind.COMMAND_SUCCESS),
        ("KIPP0006", EventKind.COMMAND_FAILED),
        ("KIPP0007", EventKind.FILE_DOWNLOAD),
        ("KIPP0008", EventKind.COMMAND_INPUT),
        ("KIPP0009", EventKind.CLIENT_VERSION),
        ("KIPP0010", EventKind.CLIENT_SIZE),
        ("KIPP0011", EventKind.SESSION_CLOSED),
        ("KIPP0013", EventKind.CLIENT_VAR),
        ("kipp0011", EventKind.SESSION_CLOSED),
        (" cowrie.session.connect ", EventKind.SESSION_CONNECT),
        ("session.connect", EventKind.SESSION_CONNECT),
        ("cowrie.session.file-upload", EventKind.FILE_UPLOAD),
        ("cowrie.session.connected", EventKind.OTHER),
        ("cowrie.", EventKind.OTHER),
        ("", EventKind.OTHER),
        ("KIPP0099", EventKind.OTHER),
    ],
)
def test_kind_of_variants(eventid: str, kind: EventKind) -> None:
    assert kind_of(eventid, {}) is kind


# --- timestamps -------------------------------------------------------------------------


@pytest.fixture
def foreign_host_time_zone() -> Iterator[None]:
    """Run with the host in a half-hour-offset zone, to prove no local time leaks in."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "America/St_Johns"
    time.tzset()
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = previous
        time.tzset()


@pytest.mark.usefixtures("foreign_host_time_zone")
@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2018-05-24T00:07:26.106328Z", T0),
        ("2018-05-24T00:07:26Z", T0.replace(microsecond=0)),
        ("2018-05-24T00:07:26", T0.replace(microsecond=0)),
        ("2018-05-24 00:07:26.106328", T0),
        ("2018-05-24T00:07:26.1Z", T0.replace(microsecond=100000)),
        ("2018-05-24T00:07:26.106328999Z", T0),
        ("2018-05-24T02:07:26.106328+02:00", T0),
        ("2018-05-24T01:07:26.106328+0100", T0),
        ("2018-05-23T20:37:26.106328-03:30", T0),
        ("2018-05-24T00:07:26.106328+00:00", T0),
        ("2018-05-24T00:07:26.106328-00:00", T0),
        ("2018-05-24 00:07:26+00:00", T0.replace(microsecond=0)),
        ("2018-05-24t00:07:26.106328Z", T0),
        ("2017-12-31T23:30:00-01:00", datetime(2018, 1, 1, 0, 30, tzinfo=UTC)),
    ],
)
def test_timestamp_forms(timestamp: str, expected: datetime) -> None:
    event = parse_line(_line("cowrie.session.connect", timestamp=timestamp))

    assert event.event_time == expected
    assert event.event_time is not None
    assert event.event_time.utcoffset() == timedelta(0)
    assert event.problems == ()


@pytest.mark.parametrize(
    "timestamp",
    [
        "2018-05-24",
        "20180524T000726Z",
        "2018-W21-4T00:07:26",
        "2018-05-24T00:07Z",
        "2018-05-24T25:07:26Z",
        "2018-02-30T00:07:26Z",
        "2018-05-24T00:07:26Zjunk",
        "0001-01-01T00:30:00+01:00",
        "9999-12-31T23:30:00-01:00",
        "",
        1527120446,
        None,
    ],
)
def test_timestamp_refused(timestamp: Any) -> None:
    event = parse_line(_line("cowrie.session.connect", timestamp=timestamp))

    assert event.event_time is None
    expected = "missing_timestamp" if timestamp is None else "bad_timestamp"
    assert event.problems == (expected,)


# --- the shared real logs ------------------------------------------------------------------


# Problem flags the real logs must raise, and nothing else: the three "downloads" whose
# url is a shell-redirect target ("/dev/null" twice, "/etc/rc.local" once).
EXPECTED_PROBLEMS: dict[str, Counter[str]] = {
    "kareiva-cowrie-logs/cowrie.json.2018-05-24": Counter({"not_a_url": 1}),
    "scriptzteam-realtime-ssh-honeypot-v1.5/cowrie.json": Counter({"not_a_url": 2}),
}


def _read_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.split(b"\n")


@pytest.mark.parametrize("name", sorted(EVENT_MIX))
def test_shared_log_event_mix(name: str) -> None:
    lines = _read_lines(SHARED_LOGS / name)
    if lines[-1] == b"":
        lines.pop()

    events: list[ParsedEvent] = []
    errors: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        try:
            events.append(parse_line(line))
        except EventError as exc:
            errors.append((number, exc.reason))

    counts = Counter(event.kind.value for event in events)
    assert counts == Counter(EVENT_MIX[name])
    assert all(event.eventid == "cowrie." + event.kind.value for event in events)
    assert EventKind.OTHER not in {event.kind for event in events}
    if name.endswith("scriptzteam-realtime-ssh-honeypot-v1.5/cowrie.json"):
        assert errors == [(6074, "invalid_json")]
    else:
        assert errors == []
    problems = Counter(flag for event in events for flag in event.problems)
    assert problems == EXPECTED_PROBLEMS.get(name, Counter())
    assert all(event.event_time is not None for event in events)
    assert all(event.src_ip_valid for event in events)


def test_shared_logs_quirks() -> None:
    events = {
        name: [parse_line(line) for line in _read_lines(SHARED_LOGS / name)[:-1] if line]
        for name in EVENT_MIX
        if not name.endswith("/cowrie.json")
    }
    kareiva_13 = events["kareiva-cowrie-logs/cowrie.json.2018-06-13"]
    hrbrmstr = events["hrbrmstr-rstudioconf2017/cowrie_2017-01-03T062830.json.gz"]
    shaun = events["shaun-schwartz-rails-cowrie-log-parser/cowrie.json.500_lines"]
    pol_19 = events["pol-alvarezzz-cloud-cowrie-honeypot/cowrie.json.2026-03-19"]

    andzejs = [e for e in kareiva_13 if e.password == "andžejs"]
    assert {e.password_sha256 for e in andzejs} == {
        "305b085a5dd7154162393a78bf64e22b20d92911cc4b7eef812f4ca2c683f83b"
    }
    assert Counter(e.protocol for e in hrbrmstr if e.session_id) == Counter(
        {"ssh": 2017, "telnet": 685}
    )
    assert {len(e.session_id or "") for e in hrbrmstr} == {8}
    nul_logins = [e for e in shaun if ESCAPE + "0" in (e.username or "") + (e.password or "")]
    assert len(nul_logins) == 15
    uploads = [e for e in pol_19 if e.file_direction == "upload"]
    assert [(e.file_name, e.transfer_ok) for e in uploads] == [("sshd", True), ("sshd", True)]
    assert all(e.file_shasum is None for e in pol_19 if e.kind is EventKind.LOG_CLOSED)
    assert max(len(e.command or "") for e in pol_19) == 1107
