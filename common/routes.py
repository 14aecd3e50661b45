"""The route table: every HTTP path the service answers, which action it is and which deployed function serves it.
The Cloud Functions, `imgclassify serve` and the emulator's gateway all dispatch through this one table. Also the
boundary every one of them applies before a route acts: which Host names are answered, and which requests a browser
may make from another site (none that change anything)."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import urlsplit

import werkzeug.exceptions
from werkzeug.datastructures import Headers
from werkzeug.http import parse_options_header
from werkzeug.routing import Map, PathConverter, Rule
from werkzeug.sansio.utils import host_is_trusted

from common.domain.errors import ClientError, InvalidRequest, NotFound

JOB_PATH = "/classification-job"


class Action(StrEnum):
    CREATE = "create"
    STATUS = "status"
    REPORT = "report"
    RESULTS = "results"  # one page of a section of the results page
    THUMBNAIL = "thumbnail"
    UNDO = "undo"
    CLOSE = "close"
    CORRECT = "correct"
    RETRY = "retry"
    INDEX = "index"


class Function(StrEnum):
    """The deployed HTTP function that serves a route (the embedded server serves them all)."""

    CREATE_JOB = "create_job"
    JOB_STATUS = "job_status"
    NONE = ""  # the embedded server only


class MethodNotAllowed(ClientError):
    """The path exists; the method does not."""


@dataclass(frozen=True)
class Route:
    method: str
    action: Action
    function: Function
    suffix: str = ""  # after /classification-job/<id>; "" with a job id is the status itself

    @property
    def template(self) -> str:
        if self.action == Action.INDEX:
            return "/"
        if self.action == Action.CREATE:
            return JOB_PATH
        return f"{JOB_PATH}/<id>" + (f"/{self.suffix}" if self.suffix else "")


ROUTES = (
    Route("POST", Action.CREATE, Function.CREATE_JOB),
    Route("GET", Action.STATUS, Function.JOB_STATUS),
    Route("GET", Action.REPORT, Function.JOB_STATUS, "report"),
    Route("GET", Action.RESULTS, Function.JOB_STATUS, "results"),
    Route("GET", Action.THUMBNAIL, Function.JOB_STATUS, "thumbnail"),
    Route("POST", Action.UNDO, Function.CREATE_JOB, "undo"),
    Route("POST", Action.CLOSE, Function.CREATE_JOB, "close"),
    Route("POST", Action.CORRECT, Function.CREATE_JOB, "corrections"),
    Route("POST", Action.RETRY, Function.CREATE_JOB, "retry"),
    Route("GET", Action.INDEX, Function.NONE),
)
Served = TypeVar("Served")


def with_pages(handlers: Mapping[Action, Served]) -> Mapping[Action, Served]:
    """A results page's pages of photos are served wherever the page is, by the same use case."""
    if Action.REPORT in handlers and Action.RESULTS not in handlers:
        return {**handlers, Action.RESULTS: handlers[Action.REPORT]}
    return handlers


def bounded(args: Mapping[str, str], name: str, default: Any, low: float, high: float, kind: type = int) -> Any:
    """A query parameter that is a number in [low, high] (`default` when absent), or a 400 naming it."""
    with contextlib.suppress(ValueError):
        value = kind(args[name]) if args.get(name, "") != "" else default
        if value is default or low <= value <= high:
            return value
    raise InvalidRequest(f"{name} must be a number from {low} to {high}", field=name)


@dataclass(frozen=True)
class Match:
    route: Route
    job_id: str | None = None


class _JobId(PathConverter):
    """A job id as the status path takes it: anything (an odd id is the use case's to refuse) that does not end
    in one of the table's suffixes (that path is the suffix's route, whatever its method)."""

    regex = r"(?!.*/(?:%s)$)[^/].*?" % "|".join(sorted(route.suffix for route in ROUTES if route.suffix))


def _rule(route: Route) -> Rule:
    path = "/" if route.action == Action.INDEX else JOB_PATH if route.action == Action.CREATE else \
        f"{JOB_PATH}/<job_id:job_id>" if route.action == Action.STATUS else f"{JOB_PATH}/<path:job_id>/{route.suffix}"
    return Rule(path, methods=[route.method], endpoint=route)


@lru_cache(maxsize=32)
def _routing(served: frozenset[Action]) -> Map:
    """The table as werkzeug's Map (HEAD answered as GET, 405s naming the methods a path has)."""
    return Map([_rule(route) for route in ROUTES if route.action in served], converters={"job_id": _JobId},
               strict_slashes=False, merge_slashes=False)


def match(method: str, path: str, query_id: str | None = None, served: Collection[Action] | None = None) -> Match:
    """The route for a request among those `served` (all by default); NotFound or MethodNotAllowed (naming what
    is allowed) otherwise. On the collection, GET is the old status form (?id=), and where nothing is created
    (the job-status function) a bare GET is a status request without an id."""
    served = frozenset(Action if served is None else served)
    path = path.rstrip("/") or "/"
    status = next((r for r in ROUTES if r.action == Action.STATUS), None)
    if path == JOB_PATH and method in ("GET", "HEAD") and Action.STATUS in served and status is not None and \
            (query_id is not None or Action.CREATE not in served):
        return Match(status, query_id)
    try:
        route, arguments = _routing(served).bind("", path_info=path).match(method=method)
    except werkzeug.exceptions.MethodNotAllowed as exc:
        allowed = sorted(set(exc.valid_methods or ["GET"]) - {"HEAD"})
        raise MethodNotAllowed(f"use {' or '.join(allowed)} {path}", field="method", allow=allowed) from None
    except werkzeug.exceptions.HTTPException:
        hint = "" if path.startswith(JOB_PATH) else f"; POST {JOB_PATH} or GET {JOB_PATH}/<id>"
        raise NotFound(f"no such path {path}{hint}", field="path") from None
    return Match(route, arguments.get("job_id"))


# --- the boundary: which requests are answered at all -------------------------------------------------------------
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Sec-Fetch-Site of a request made by this server's own pages ("same-origin") or by the user (typed, bookmarked:
# "none"). "same-site" is another port or subdomain: another origin, so another program.
OWN_SITE = frozenset({"same-origin", "none"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class WrongHost(ClientError):
    """A Host header naming something this server was not started for: a DNS-rebinding page, or a stray proxy."""


class NotJson(ClientError):
    """A request that changes something without a JSON content type (what a cross-site form or no-cors fetch
    sends)."""


class CrossSite(ClientError):
    """A browser request another site's page made."""


def host_name(host: str) -> str | None:
    """The name a Host value gives (lowercase, port dropped, IPv6 in brackets); None when it is malformed."""
    host = host.strip().lower()
    if not host_is_trusted(host):  # werkzeug's own syntax check: valid characters, a port 1-65535
        return None
    if host.endswith("]") or ":" not in host:
        return host
    return host.rpartition(":")[0]


def allowed_name(entry: str) -> str:
    """A configured name (--allowed-host, ALLOWED_HOSTS) as compared: lowercase, any port dropped, IPv6 in
    brackets; a leading dot allows the name and every subdomain, as werkzeug's trusted hosts do."""
    entry = entry.strip().lower()
    if entry.count(":") > 1 and not entry.startswith("["):
        entry = f"[{entry}]"
    return host_name(entry) or entry


def check_host(host: str | None, allowed: Collection[str]) -> None:
    """Only the names a server was started for are answered (none configured: the deployed functions, whose Host is
    Cloud Run's or API Gateway's). Any port: a rebinding page is told apart by its name, not its port."""
    if not allowed:
        return
    name = host_name(host or "")
    names = {allowed_name(entry) for entry in allowed}
    if name is None or not any(name == n or (n.startswith(".") and (name == n[1:] or name.endswith(n)))
                               for n in names):
        shown = (host or "")[:100]
        raise WrongHost(f"this server does not answer to Host {shown!r}: start it with --allowed-host NAME (the "
                        "functions: ALLOWED_HOSTS) to serve that name", field="Host")


def origin(scheme: str, host: str) -> str | None:
    """scheme://host[:port] as a browser serializes an Origin (lowercase, no default port); None if malformed."""
    try:
        parts = urlsplit(f"{scheme.strip().lower()}://{host.strip()}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.path or parts.query or parts.username is not None:
        return None
    name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{name}" + (f":{port}" if port and port != _DEFAULT_PORTS.get(parts.scheme) else "")


def origin_of_url(url: str) -> str | None:
    parts = urlsplit(url)
    return origin(parts.scheme, parts.netloc) if parts.scheme and parts.netloc else None


def _top_level_navigation(method: str, headers: Headers | Mapping[str, str]) -> bool:
    """A link from elsewhere opening a page: the other site sees nothing of what it gets (and pages refuse frames)."""
    return method in ("GET", "HEAD") and headers.get("Sec-Fetch-Mode", "").lower() == "navigate" and \
        headers.get("Sec-Fetch-Dest", "").lower() in ("document", "")


def check_browser(method: str, headers: Headers | Mapping[str, str], own_origins: Callable[[], Collection[str]]
                  ) -> None:
    """What a browser says about who made a request. A write needs a JSON content type (a form or a no-cors fetch
    cannot send one; a fetch that does is preflighted, which this service never grants), and, when the browser
    says where it came from, this server's own origin. From another site only a top-level navigation is
    answered: no <img>, <script> or fetch there can tell a job id that exists from one that does not. Clients that
    send no Sec-Fetch-Site and no Origin (curl, requests, the old client) are not browsers: unchanged."""
    site = headers.get("Sec-Fetch-Site", "").strip().lower()[:40]
    if method in SAFE_METHODS:
        if site and site not in OWN_SITE and not _top_level_navigation(method, headers):
            raise CrossSite(f"a {site} request from another page: only this server's own pages may ask",
                            field="Sec-Fetch-Site")
        return
    if site and site not in OWN_SITE:
        raise CrossSite(f"a {site} request: only this server's own pages may change anything",
                        field="Sec-Fetch-Site")
    sent = headers.get("Origin")
    if sent is not None and origin_of_url(sent) not in own_origins():
        raise CrossSite(f"Origin {sent[:100]!r} is not this server's: only its own pages may change anything",
                        field="Origin")
    if parse_options_header(headers.get("Content-Type"))[0].lower() != "application/json":
        raise NotJson("a request that changes something must be JSON: send Content-Type: application/json "
                      "(and a JSON body, {} when there is nothing to say)", field="Content-Type")
