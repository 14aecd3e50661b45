"""The embedded server: waitress (the ecosystem's pure-Python production WSGI server), made to hold up against
slow clients and to answer its own errors in JSON like the application does.

waitress reads each request whole before a worker thread sees it (a slow client holds a socket, never a thread)
and caps open connections. At the cap it stops accepting, so clients trickling a header line every few seconds
could hold every place and starve everyone else. Here a connection gets REQUEST_DEADLINE seconds to deliver a
whole request, and at the cap the connection that has waited longest without delivering one is dropped to make
room: status keeps answering whatever slow connections are held.
"""
from __future__ import annotations

import json
import time
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask

REQUEST_DEADLINE = 10.0  # seconds for a connection to send a whole request (headers and body)


class JsonErrorTask(ErrorTask):
    """waitress' own answers (413 body too large, 431 headers too large, 400 malformed) as JSON."""

    def execute(self) -> None:
        error = self.request.error
        body = json.dumps({"code": error.code, "message": f"{error.reason}: {error.body}",
                           "field": "body" if error.code == 413 else "headers" if error.code == 431 else
                           "request"}).encode("utf-8")
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class DeadlineChannel(HTTPChannel):
    error_task_class = JsonErrorTask

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting_since: float | None = time.monotonic()  # when it began owing us a request

    def received(self, data: bytes) -> bool:
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
        result = super().received(data)
        if self.requests:  # a whole request arrived: it owes nothing until it starts another
            self.waiting_since = None
        return result

    def owes_request(self) -> bool:
        return self.waiting_since is not None and not self.requests and not self.total_outbufs_len and \
            not self.will_close


class GuardedServer(TcpWSGIServer):
    channel_class = DeadlineChannel

    def _waiting(self) -> list[DeadlineChannel]:
        return sorted((c for c in list(self.active_channels.values())
                       if isinstance(c, DeadlineChannel) and c.owes_request()),
                      key=lambda c: c.waiting_since or 0.0)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)
        cutoff = time.monotonic() - REQUEST_DEADLINE
        for channel in self._waiting():
            if (channel.waiting_since or 0.0) < cutoff:
                channel.will_close = True  # closed by the loop itself (closing here would pull fds from its select)

    def readable(self) -> bool:
        if self.accepting and len(self._map) >= self.adj.connection_limit:
            waiting = self._waiting()
            for channel in waiting[:max(1, len(waiting) // 4)]:  # the longest-waiting quarter makes room
                channel.will_close = True
        return super().readable()


def logged(app: Any) -> Any:
    """One structured log line per request (method, path, status, milliseconds), in DIR/.imgclassify/log.jsonl
    with everything else; never the query string (a preview's name) or a header (the key)."""
    from common.logs import get_logger

    log = get_logger("serve")

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        started = time.monotonic()
        status: list[str] = []

        def recording(code: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(code)
            return start_response(code, headers, exc_info)

        try:
            return app(environ, recording)
        finally:
            log.info("request", extra={"method": environ.get("REQUEST_METHOD"), "path": environ.get("PATH_INFO"),
                                       "status": int(status[0].split()[0]) if status else 500,
                                       "ms": round((time.monotonic() - started) * 1000, 1)})

    return wsgi


def create_server(app: Any, port: int, connection_limit: int, max_body_bytes: int) -> GuardedServer:
    return GuardedServer(logged(app), host="127.0.0.1", port=port, threads=8, connection_limit=connection_limit,
                         channel_timeout=30, cleanup_interval=2, max_request_header_size=16 * 1024,
                         max_request_body_size=max_body_bytes, ident="imgclassify")
