"""Completion callbacks over HTTP(S), with the standard library (no client library needed for one POST).

The host is resolved once, every address it resolves to is checked against the callback policy, and the
connection goes to the checked address (a second lookup could answer differently: DNS rebinding). Redirects are
never followed: the answer's status is the outcome. Whatever goes wrong on the way is "unreachable", with no
socket detail: a refused port and a silent one look the same to whoever chose the URL.
"""
from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from urllib.parse import urlsplit

from common.domain.callbacks import CallbackPolicy, address_refusal, literal_address, url_refusal
from common.domain.errors import CallbackRefused, TransientError


def _checked_address(host: str, port: int, policy: CallbackPolicy) -> str:
    literal = literal_address(host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise TransientError("unreachable") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    for address in addresses:
        parsed = literal_address(address)
        if parsed is None or address_refusal(parsed, policy) is not None:
            raise CallbackRefused("refused: the host resolves to an address callbacks may not reach")
    if not addresses:
        raise TransientError("unreachable")
    return addresses[0]


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to a checked address, with the certificate checked against the URL's host name."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class HttpCallbackSender:
    def __init__(self, policy: CallbackPolicy) -> None:
        self._policy = policy

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        """The answer's HTTP status (a redirect's too: never followed). Raises TransientError("unreachable") when
        no answer came, CallbackRefused when the URL may not be reached."""
        refusal = url_refusal(url, self._policy)
        if refusal is not None:
            raise CallbackRefused(f"refused: {refusal}")
        parts = urlsplit(url)
        assert parts.hostname is not None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = _checked_address(parts.hostname, port, self._policy)
        kind = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
        connection = kind(parts.hostname, address, port, timeout)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # The socket timeout bounds each wait; this bounds the whole attempt (a server trickling a byte at a time).
        watchdog = threading.Timer(timeout, lambda: _cut(connection))
        watchdog.daemon = True
        watchdog.start()
        try:
            connection.request("POST", target, body=body, headers={**headers, "Content-Length": str(len(body))})
            return int(connection.getresponse().status)
        except (OSError, http.client.HTTPException, ValueError):
            raise TransientError("unreachable") from None
        finally:
            watchdog.cancel()
            connection.close()


def _cut(connection: http.client.HTTPConnection) -> None:
    if connection.sock is not None:
        with contextlib.suppress(OSError):
            connection.sock.shutdown(socket.SHUT_RDWR)
