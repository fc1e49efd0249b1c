"""What SOURCES.md says of each shared real log file, for the tests that load them."""

from __future__ import annotations

# (file, events, sessions, distinct src_ip) from SOURCES.md "Summary".
EXPECTED = {
    "kareiva-cowrie-logs/cowrie.json.2018-05-24": (1937, 502, 58),
    "kareiva-cowrie-logs/cowrie.json.2018-06-13": (3989, 978, 52),
    "kareiva-cowrie-logs/cowrie.json.2018-06-15": (3650, 466, 78),
    "kareiva-cowrie-logs/cowrie.json.2018-06-16": (5915, 607, 74),
    "hrbrmstr-rstudioconf2017/cowrie_2017-01-03T062830.json.gz": (2702, 880, 48),
    "scriptzteam-realtime-ssh-honeypot-v1.5/cowrie.json.2017_11_4": (3833, 260, 66),
    "scriptzteam-realtime-ssh-honeypot-v1.5/cowrie.json": (6073, 191, 92),
    "pol-alvarezzz-cloud-cowrie-honeypot/cowrie.json.2026-03-19": (656, 121, 23),
    "pol-alvarezzz-cloud-cowrie-honeypot/cowrie.json.2026-03-20": (1435, 264, 19),
    "shaun-schwartz-rails-cowrie-log-parser/cowrie.json.500_lines": (501, 39, 17),
}
TOTAL_EVENTS = sum(v[0] for v in EXPECTED.values())  # 30,691
# One session (975def2ff4af) spans 2018-06-15 and 2018-06-16 and becomes one row.
TOTAL_SESSIONS = sum(v[1] for v in EXPECTED.values()) - 1


# SOURCES.md, "Event mix per file" (eventid counts without the "cowrie." prefix).
# fmt: off
EVENT_MIX: dict[str, dict[str, int]] = {
    "kareiva-cowrie-logs/cowrie.json.2018-05-24": {
        "session.connect": 502, "session.closed": 502, "client.version": 357,
        "login.failed": 227, "direct-tcpip.request": 113, "direct-tcpip.data": 113,
        "login.success": 35, "log.open": 26, "command.input": 26, "log.closed": 23,
        "command.failed": 9, "session.file_download": 3, "session.file_download.failed": 1,
    },
    "kareiva-cowrie-logs/cowrie.json.2018-06-13": {
        "session.connect": 978, "session.closed": 978, "client.version": 959,
        "login.failed": 806, "direct-tcpip.request": 107, "direct-tcpip.data": 107,
        "login.success": 33, "log.open": 7, "command.input": 7, "log.closed": 7,
    },
    "kareiva-cowrie-logs/cowrie.json.2018-06-15": {
        "direct-tcpip.request": 1033, "direct-tcpip.data": 702, "session.connect": 466,
        "session.closed": 465, "client.version": 435, "login.failed": 302,
        "login.success": 229, "log.open": 6, "log.closed": 6, "command.input": 5,
        "client.size": 1,
    },
    "kareiva-cowrie-logs/cowrie.json.2018-06-16": {
        "direct-tcpip.request": 2411, "direct-tcpip.data": 1097, "session.closed": 607,
        "session.connect": 606, "client.version": 589, "login.success": 334,
        "login.failed": 245, "log.open": 8, "command.input": 8, "log.closed": 8,
        "command.failed": 2,
    },
    "hrbrmstr-rstudioconf2017/cowrie_2017-01-03T062830.json.gz": {
        "session.connect": 880, "session.closed": 880, "client.version": 316,
        "login.success": 235, "login.failed": 112, "log.open": 66, "log.closed": 65,
        "command.input": 64, "command.success": 49, "command.failed": 34,
        "direct-tcpip.request": 1,
    },
    "scriptzteam-realtime-ssh-honeypot-v1.5/cowrie.json.2017_11_4": {
        "direct-tcpip.request": 1752, "direct-tcpip.data": 733, "login.failed": 275,
        "session.connect": 260, "client.version": 254, "session.closed": 252,
        "command.success": 120, "command.input": 99, "login.success": 59,
        "command.failed": 15, "log.open": 6, "client.size": 3, "session.file_download": 3,
        "log.closed": 2,
    },
    "scriptzteam-realtime-ssh-honeypot-v1.5/cowrie.json": {
        "direct-tcpip.request": 3545, "direct-tcpip.data": 1544, "session.connect": 171,
        "session.closed": 170, "client.version": 166, "command.success": 155,
        "command.input": 141, "login.success": 82, "login.failed": 61,
        "command.failed": 24, "client.size": 5, "log.open": 5, "session.file_download": 3,
        "log.closed": 1,
    },
    "pol-alvarezzz-cloud-cowrie-honeypot/cowrie.json.2026-03-19": {
        "session.connect": 121, "session.closed": 121, "client.version": 109,
        "client.kex": 101, "login.failed": 62, "command.input": 50, "login.success": 31,
        "session.params": 29, "log.closed": 29, "session.file_upload": 2,
        "client.fingerprint": 1,
    },
    "pol-alvarezzz-cloud-cowrie-honeypot/cowrie.json.2026-03-20": {
        "session.connect": 264, "session.closed": 264, "client.version": 254,
        "client.kex": 247, "login.failed": 192, "session.params": 54, "command.input": 54,
        "log.closed": 54, "login.success": 47, "command.failed": 1,
        "client.fingerprint": 1, "direct-tcpip.request": 1, "direct-tcpip.ja4": 1,
        "direct-tcpip.data": 1,
    },
    "shaun-schwartz-rails-cowrie-log-parser/cowrie.json.500_lines": {
        "login.failed": 150, "login.success": 128, "log.open": 128, "session.closed": 38,
        "session.connect": 37, "client.version": 11, "log.closed": 9,
    },
}
# fmt: on
