"""The route table: every HTTP path the service answers, which action it is and which deployed function serves it.
The Cloud Functions, `imgclassify serve` and the emulator's gateway all dispatch through this one table."""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

from common.domain.errors import ClientError, NotFound

JOB_PATH = "/classification-job"


class Action(StrEnum):
    CREATE = "create"
    STATUS = "status"
    REPORT = "report"
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
    Route("GET", Action.THUMBNAIL, Function.JOB_STATUS, "thumbnail"),
    Route("POST", Action.UNDO, Function.CREATE_JOB, "undo"),
    Route("POST", Action.CLOSE, Function.CREATE_JOB, "close"),
    Route("POST", Action.CORRECT, Function.CREATE_JOB, "corrections"),
    Route("POST", Action.RETRY, Function.CREATE_JOB, "retry"),
    Route("GET", Action.INDEX, Function.NONE),
)
_SUFFIXES = {route.suffix for route in ROUTES if route.suffix}


@dataclass(frozen=True)
class Match:
    route: Route
    job_id: str | None = None


def _candidates(path: str) -> tuple[str, str | None]:
    """(suffix, job id) a path names: "" and None for the jobs collection, "/" for the index."""
    path = path.rstrip("/") or "/"
    if path == "/":
        return "/", None
    if path == JOB_PATH:
        return "", None
    if not path.startswith(JOB_PATH + "/"):
        raise NotFound(f"no such path {path}; POST {JOB_PATH} or GET {JOB_PATH}/<id>", field="path")
    rest = path[len(JOB_PATH) + 1:]
    job_id, _, suffix = rest.rpartition("/")
    if job_id and suffix in _SUFFIXES:
        return suffix, job_id
    return "", rest  # /classification-job/<anything>: a status request (an odd id is the use case's to refuse)


def match(method: str, path: str, query_id: str | None = None, served: Collection[Action] | None = None) -> Match:
    """The route for a request among those `served` (all by default); NotFound or MethodNotAllowed (naming what
    is allowed) otherwise. On the collection, GET is the old status form (?id=), and where nothing is created
    (the job-status function) a bare GET is a status request without an id."""
    served = set(Action) if served is None else set(served)
    suffix, job_id = _candidates(path)
    routes = [r for r in ROUTES if r.action in served]
    if suffix == "/":
        routes = [r for r in routes if r.action == Action.INDEX]
    elif job_id is None:
        status_here = query_id is not None or Action.CREATE not in served
        routes = [r for r in routes if r.action == Action.CREATE or (r.action == Action.STATUS and status_here)]
        job_id = query_id
    else:
        routes = [r for r in routes if r.suffix == suffix and r.action not in (Action.CREATE, Action.INDEX)]
    method = "GET" if method == "HEAD" else method
    for route in routes:
        if route.method == method:
            return Match(route, job_id)
    allowed = sorted({r.method for r in routes}) or ["GET"]
    if not routes:
        raise NotFound(f"no such path {path}", field="path")
    example = routes[0].template
    raise MethodNotAllowed(f"use {' or '.join(allowed)} {example}", field="method", allow=allowed)
