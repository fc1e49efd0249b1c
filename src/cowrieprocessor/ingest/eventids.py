"""Cowrie event ids of every version, mapped to one normalised :class:`EventKind`.

Cowrie has named its events three ways over the years: ``KIPPnnnn`` codes (the Kippo
heritage, 2014-2015), dotted ``cowrie.*`` ids (1.x onwards) and a few late additions
(``cowrie.direct-tcpip.ja4``, ``cowrie.client.malformed_packet``). Legacy ids that newer
Cowrie dropped, such as ``cowrie.command.success``, keep their own kind so nothing is lost.

Lookup is exact first (the id as Cowrie writes it). Failing that, a *spelling variant* is
matched by folding case, dropping a leading ``cowrie.`` and ignoring ``-``, ``_``, ``.``
and spaces, so ``Cowrie.Direct_TCPIP.Request`` or ``session.file_download_failed`` still
resolve. Ids that match nothing are :attr:`EventKind.OTHER`: kept, never rejected.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    """What an event means, independent of the Cowrie version that wrote it.

    The value is the current Cowrie id without its ``cowrie.`` prefix.
    """

    SESSION_CONNECT = "session.connect"
    SESSION_CLOSED = "session.closed"
    SESSION_PARAMS = "session.params"
    SESSION_INPUT = "session.input"
    FILE_DOWNLOAD = "session.file_download"
    FILE_DOWNLOAD_FAILED = "session.file_download.failed"
    FILE_UPLOAD = "session.file_upload"
    LOGIN_SUCCESS = "login.success"
    LOGIN_FAILED = "login.failed"
    COMMAND_INPUT = "command.input"
    COMMAND_FAILED = "command.failed"
    COMMAND_SUCCESS = "command.success"
    COMMAND_CHPASSWD = "command.chpasswd"
    CLIENT_VERSION = "client.version"
    CLIENT_KEX = "client.kex"
    CLIENT_SIZE = "client.size"
    CLIENT_FINGERPRINT = "client.fingerprint"
    CLIENT_VAR = "client.var"
    CLIENT_MALFORMED_PACKET = "client.malformed_packet"
    LOG_OPEN = "log.open"
    LOG_CLOSED = "log.closed"
    DIRECT_TCPIP_REQUEST = "direct-tcpip.request"
    DIRECT_TCPIP_DATA = "direct-tcpip.data"
    DIRECT_TCPIP_JA4 = "direct-tcpip.ja4"
    DIRECT_TCPIP_JA4H = "direct-tcpip.ja4h"
    DIRECT_TCPIP_REDIRECT = "direct-tcpip.redirect"
    DIRECT_TCPIP_TUNNEL = "direct-tcpip.tunnel"
    TUNNELPROXY_TCPIP_DATA = "tunnelproxy-tcpip.data"
    TELNET_ERROR = "telnet.error"
    TELNET_EXPLOIT_ATTEMPT = "telnet.exploit_attempt"
    TELNET_EXPLOIT_SUCCESS = "telnet.exploit_success"
    TELNET_OPTION = "telnet.option"
    PROXY_BACKEND_CONNECT_ERROR = "proxy.backend_connect_error"
    PROXY_BACKEND_CONNECTED = "proxy.backend_connected"
    PROXY_BACKEND_DISCONNECTED = "proxy.backend_disconnected"
    PROXY_CLIENT_DISCONNECT = "proxy.client_disconnect"
    PROXY_SSH = "proxy.ssh"
    ABUSEIPDB_RATELIMITED = "abuseipdb.ratelimited"
    ABUSEIPDB_REPORTEDIP = "abuseipdb.reportedip"
    ABUSEIPDB_REPORTFAIL = "abuseipdb.reportfail"
    ABUSEIPDB_STARTED = "abuseipdb.started"
    ABUSEIPDB_WAKEUP = "abuseipdb.wakeup"
    GREYNOISE_RESULT = "greynoise.result"
    REVERSEDNS_CONNECT = "reversedns.connect"
    REVERSEDNS_FORWARD = "reversedns.forward"
    URLHAUS_SUBMITTED = "urlhaus.submitted"
    VIRUSTOTAL_SCANFILE = "virustotal.scanfile"
    VIRUSTOTAL_SCANURL = "virustotal.scanurl"
    OTHER = "other"


# Events that Cowrie emits outside any attacker session (plugin housekeeping), so a
# missing ``session`` field is expected there rather than a defect of the line.
SESSIONLESS_KINDS: frozenset[EventKind] = frozenset(
    {
        EventKind.ABUSEIPDB_RATELIMITED,
        EventKind.ABUSEIPDB_REPORTEDIP,
        EventKind.ABUSEIPDB_REPORTFAIL,
        EventKind.ABUSEIPDB_STARTED,
        EventKind.ABUSEIPDB_WAKEUP,
        EventKind.OTHER,
    }
)

# Kippo-era codes as Cowrie used them until 2015. KIPP0012 meant "TTY log closed" in the
# dblog plugins but a direct-tcpip forward request in one output module of the same era,
# so it is resolved by the fields the event carries (see kind_of).
_KIPPO_IDS: dict[str, EventKind] = {
    "KIPP0001": EventKind.SESSION_CONNECT,
    "KIPP0002": EventKind.LOGIN_SUCCESS,
    "KIPP0003": EventKind.LOGIN_FAILED,
    "KIPP0004": EventKind.LOG_OPEN,
    "KIPP0005": EventKind.COMMAND_SUCCESS,
    "KIPP0006": EventKind.COMMAND_FAILED,
    "KIPP0007": EventKind.FILE_DOWNLOAD,
    "KIPP0008": EventKind.COMMAND_INPUT,
    "KIPP0009": EventKind.CLIENT_VERSION,
    "KIPP0010": EventKind.CLIENT_SIZE,
    "KIPP0011": EventKind.SESSION_CLOSED,
    "KIPP0013": EventKind.CLIENT_VAR,
}
_KIPPO_AMBIGUOUS = "KIPP0012"


def _fold(eventid: str) -> str:
    """The spelling-insensitive key of an id (see the module docstring)."""
    folded = eventid.strip().lower()
    if folded.startswith("cowrie."):
        folded = folded[len("cowrie.") :]
    for mark in ("-", "_", ".", " "):
        folded = folded.replace(mark, "")
    return folded


_EXACT: dict[str, EventKind] = {
    "cowrie." + kind.value: kind for kind in EventKind if kind is not EventKind.OTHER
}
_EXACT.update(_KIPPO_IDS)

_FOLDED: dict[str, EventKind] = {
    _fold(kind.value): kind for kind in EventKind if kind is not EventKind.OTHER
}
_FOLDED.update({code.lower(): kind for code, kind in _KIPPO_IDS.items()})


@functools.lru_cache(maxsize=1024)
def _kind_of_variant(eventid: str) -> EventKind:
    # Bounded cache: a damaged file could carry endless distinct garbage ids.
    return _FOLDED.get(_fold(eventid), EventKind.OTHER)


def kind_of(eventid: str, payload: Mapping[str, Any]) -> EventKind:
    """The kind of event ``eventid`` (as written); ``payload`` settles the one Kippo code
    whose meaning changed. Never raises; an unknown id gives :attr:`EventKind.OTHER`."""
    kind = _EXACT.get(eventid)
    if kind is not None:
        return kind
    if eventid.strip().upper() == _KIPPO_AMBIGUOUS:
        if "dst_ip" in payload or "dst_port" in payload:
            return EventKind.DIRECT_TCPIP_REQUEST
        return EventKind.LOG_CLOSED
    return _kind_of_variant(eventid)
