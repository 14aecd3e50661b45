"""The HTTP layer, shared by the create_job and job_status functions and the embedded server: the only place that
knows status codes. Requests are matched against the one route table (common/routes.py) and handed to the use
case for their action; every response is JSON, errors included: the status says what kind of problem, `field`
where. Pages (the results page, the jobs index) are rendered here from what the use cases return. Before any
route acts, the boundary (common/routes.py) decides whether the request is answered at all: its Host, and whether
another site's page made it.
"""
from __future__ import annotations

import base64
import dataclasses
import functools
import hmac
import json
from collections.abc import Callable, Collection, Mapping
from typing import Any
from urllib.parse import quote

import flask
from werkzeug.exceptions import HTTPException

from common.config import Settings
from common.domain.errors import (ClientError, ConfigurationError, Conflict, FanOutInterrupted, InvalidRequest,
                                  NotFound, Overloaded, TransientError)
from common.logs import get_logger
from common.routes import (JOB_PATH, LOOPBACK_HOSTS, Action, CrossSite, MethodNotAllowed, NotJson, WrongHost,
                           bounded, check_browser, check_host, match, origin, origin_of_url, with_pages)

log = get_logger("http")

RETRY_AFTER_TRANSIENT = 5  # seconds: a dependency's 503 usually passes quickly
RETRY_AFTER_MISCONFIGURED = 60  # an operator must act; do not hammer

Handlers = Mapping[Action, Callable[[], Any]]  # each action's use case, built on first use


class Unauthorized(ClientError):
    """No or the wrong service key."""


class PayloadTooLarge(ClientError):
    """The body is over the configured limit."""


# Most specific first: the first class an error is an instance of decides its status.
STATUS_OF: tuple[tuple[type[ClientError], int], ...] = (
    (Unauthorized, 401), (CrossSite, 403), (NotFound, 404), (MethodNotAllowed, 405), (Conflict, 409),
    (PayloadTooLarge, 413), (NotJson, 415), (WrongHost, 421), (Overloaded, 429), (InvalidRequest, 400),
    (ClientError, 400))
# On every answer: no other site may frame a page (clickjacking an undo button), and nothing is sniffed into HTML
# or script. No Access-Control-Allow-Origin is ever sent: other sites' pages cannot read any answer.
HARDENING_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                     "Content-Security-Policy": "frame-ancestors 'none'"}


def status_of(exc: ClientError) -> int:
    return next(status for kind, status in STATUS_OF if isinstance(exc, kind))


def json_response(body: Mapping[str, Any], status: int) -> flask.Response:
    return flask.Response(json.dumps(body), status=status, mimetype="application/json")


def error_response(status: int, message: str, retry_after: int | None = None, **extra: object) -> flask.Response:
    response = json_response({"code": status, "message": message, **extra}, status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def allowed_methods(exc: MethodNotAllowed) -> list[str]:
    allow = exc.details.get("allow", [])
    return [str(method) for method in allow] if isinstance(allow, list) else []


def client_error_response(exc: ClientError) -> flask.Response:
    status = status_of(exc)
    response = json_response({"code": status, **exc.to_json()}, status)
    if isinstance(exc, Overloaded):
        response.headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, MethodNotAllowed):
        response.headers["Allow"] = ", ".join(allowed_methods(exc))
    if isinstance(exc, Unauthorized):
        # A browser asks for the key (as the password) and sends it with every later page and preview.
        response.headers["WWW-Authenticate"] = 'Basic realm="imgclassify", charset="UTF-8"'
    return response


def guarded(handler: Callable[..., flask.Response]) -> Callable[..., flask.Response]:
    """Turn every failure into a JSON error; log what the user cannot fix."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> flask.Response:
        try:
            return handler(*args, **kwargs)
        except ClientError as exc:
            return client_error_response(exc)
        except FanOutInterrupted as exc:
            log.warning("fan-out interrupted", extra={"job_id": exc.job_id, "error": str(exc)})
            return error_response(503, str(exc), RETRY_AFTER_TRANSIENT, id=exc.job_id, resumable=exc.resumable)
        except TransientError as exc:
            log.warning("dependency unavailable", extra={"error": str(exc)})
            return error_response(503, f"temporarily unavailable, retry: {exc}", RETRY_AFTER_TRANSIENT)
        except ConfigurationError as exc:
            log.error("service misconfigured", extra={"error": str(exc)})
            return error_response(503, f"service misconfigured: {exc}", RETRY_AFTER_MISCONFIGURED)
        except HTTPException as exc:
            return error_response(exc.code or 500, exc.description or exc.name)
        except Exception:
            log.exception("unhandled error")
            return error_response(500, "internal error")

    return wrapper


def supplied_key(request: flask.Request) -> str:
    """The key in the Authorization header: as the old clients send it (bare or Bearer), or as a browser sends
    it (Basic, the key as the password, any user name). Behind API Gateway the caller's Authorization header
    arrives as X-Forwarded-Authorization (the gateway puts its own ID token for the function in Authorization)."""
    supplied = request.headers.get("X-Forwarded-Authorization") or request.headers.get("Authorization", "")
    scheme, _, credentials = supplied.partition(" ")
    if scheme.lower() == "bearer":
        return credentials
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return ""
    return supplied


def own_origins(request: flask.Request, public_base: str = "") -> set[str]:
    """The origins this request may come from: the Host it was addressed by; the host a proxy in front says it was
    addressed by (X-Forwarded-Host/-Proto: a page on another site cannot set them, a no-cors request cannot carry
    them and a CORS one is preflighted, which is never granted); and the service's public base URL (API Gateway's,
    STATUS_URL_BASE, which rewrites Host without saying so)."""
    schemes = {request.scheme, *_first(request, "X-Forwarded-Proto")}
    hosts = {request.headers.get("Host", ""), *_first(request, "X-Forwarded-Host")}
    found = {origin(scheme, host) for scheme in schemes for host in hosts if host}
    found.add(origin_of_url(public_base) if public_base else None)
    return {o for o in found if o}


def _first(request: flask.Request, header: str) -> list[str]:
    value = request.headers.get(header, "").split(",")[0].strip()
    return [value] if value else []


def check_boundary(request: flask.Request, allowed_hosts: Collection[str], public_base: str = "") -> None:
    """Whether a request that matched a route is answered at all: its Host, then what its browser says about who
    made it (common/routes.py)."""
    check_host(request.headers.get("Host"), allowed_hosts)
    check_browser(request.method, request.headers, lambda: own_origins(request, public_base))


def hardened(response: flask.Response) -> flask.Response:
    for name, value in HARDENING_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def check_auth(request: flask.Request, service_key: str) -> None:
    if not service_key:
        return
    if not hmac.compare_digest(supplied_key(request).encode("utf-8"), service_key.encode("utf-8")):
        raise Unauthorized("missing or wrong Authorization header", field="Authorization")


def read_json_body(request: flask.Request, max_bytes: int, empty: object | None = None) -> object:
    """The body, parsed; `empty` (when given) stands for no body at all."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"request body larger than {max_bytes} bytes", field="body")
    raw = request.get_data(cache=False)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body larger than {max_bytes} bytes", field="body")
    if empty is not None and not raw.strip():
        return empty
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidRequest("request body must be JSON, e.g. {\"classes\": [\"dog\"]}", field="body") from None
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply", field="body") from None


def status_url(settings: Settings, job_id: str) -> str:
    return f"{settings.status_url_base.rstrip('/')}{JOB_PATH}/{job_id}"


def job_response(body: Mapping[str, Any], status: int, settings: Settings) -> flask.Response:
    """A job's view (its JSON body) as the old service answered it: `code` first, the fields, then where to poll."""
    url = status_url(settings, body["id"])
    response = json_response({"code": status, **body, "status_url": url}, status)
    if status == 201:
        response.headers["Location"] = url
    return response


def _required_id(job_id: str | None) -> str:
    if not job_id:
        raise InvalidRequest("job id is required: GET /classification-job/<id> or ?id=<id>", field="id")
    return job_id


# --- one responder per action ------------------------------------------------------------------------------------
def _create(request: flask.Request, handler: Any, settings: Settings, job_id: str | None) -> flask.Response:
    return job_response(handler(read_json_body(request, settings.max_body_bytes)).body, 201, settings)


def _status(request: flask.Request, handler: Any, settings: Settings, job_id: str | None) -> flask.Response:
    return job_response(handler(_required_id(job_id)).body, 200, settings)


def _no_arguments(request: flask.Request, settings: Settings) -> None:
    """undo, close and retry take nothing: no body, or a JSON object ({}, as the pages send)."""
    if not isinstance(read_json_body(request, settings.max_body_bytes, empty={}), dict):
        raise InvalidRequest("the body must be a JSON object ({}): this request takes no arguments", field="body")


def _act(request: flask.Request, handler: Any, settings: Settings, job_id: str | None) -> flask.Response:
    _no_arguments(request, settings)
    return _status(request, handler, settings, job_id)


def _undo(request: flask.Request, handler: Any, settings: Settings, job_id: str | None) -> flask.Response:
    _no_arguments(request, settings)
    return json_response({"code": 200, **handler(_required_id(job_id))}, 200)


def _correct(request: flask.Request, handler: Any, settings: Settings, job_id: str | None) -> flask.Response:
    return json_response({"code": 200, **handler(_required_id(job_id), read_json_body(request,
                                                                                       settings.max_body_bytes))}, 200)


def _links(request: flask.Request, job_id: str) -> tuple[str, Callable[..., str], Callable[[str], str]]:
    """A served page's base URL, and where its previews and full photos are fetched (through this service)."""
    base = f"{request.script_root}{JOB_PATH}/{job_id}"

    def preview_url(name: str, box: tuple[float, ...] | None) -> str:
        url = f"{base}/thumbnail?name={quote(name, safe='')}"
        return url + ("&box=" + ",".join(f"{v:.4f}" for v in box) if box else "")

    return base, preview_url, lambda name: f"{base}/thumbnail?name={quote(name, safe='')}&size=full"


def _report(request: flask.Request, handler: Any, settings: Settings, job_id: str | None) -> flask.Response:
    """The results page (?format=html|csv|jsonl): the page with the first photos of each section (it fetches
    the others from …/results), an export with every result."""
    from common.pages import FORMATS, page_sections, render, served_first_page

    job_id = _required_id(job_id)
    fmt = request.args.get("format", "html")
    if fmt not in FORMATS:
        raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}", field="format")
    base, preview_url, full_photo_url = _links(request, job_id)
    sections = None
    if fmt == "html":
        view, pages = handler.sections(job_id, served_first_page)
        results, sections = [], page_sections(view, ((p.key, p.results, p.total) for p in pages))
    else:
        view, results = (report := handler(job_id)).view, report.results
    undone = "undone_at" in view.extra  # it owns no copies: nothing to undo or correct
    content_type, body = render(view, results, fmt, preview_url, live=True,
                                corrections_url=None if undone else f"{base}/corrections", full_photo=full_photo_url,
                                undo_url=None if undone else f"{base}/undo", sections=sections,
                                results_url=f"{base}/results")
    response = flask.Response(body, status=200, content_type=content_type)
    if fmt != "html":
        response.headers["Content-Disposition"] = f'attachment; filename="{job_id}.{fmt}"'
    return response


def _results(request: flask.Request, handler: Any, settings: Settings, job_id: str | None) -> flask.Response:
    """One page of one section of the results page (…/results?section=&offset=&limit=&q=&score=): its figures."""
    from common.pages import SERVED_PAGE, render_figures

    args, job_id = request.args, _required_id(job_id)
    offset, limit = bounded(args, "offset", 0, 0, 10**9), bounded(args, "limit", SERVED_PAGE, 1, SERVED_PAGE)
    score = bounded(args, "score", None, 0, 1, float)
    view, page = handler.page(job_id, args.get("section", ""), offset, limit, args.get("q", "")[:100], score)
    base, preview_url, full_photo_url = _links(request, job_id)
    html = render_figures(view, page.key, page.results, preview_url,
                          None if "undone_at" in view.extra else f"{base}/corrections", full_photo_url)
    return json_response({"code": 200, "section": page.key, "offset": offset, "count": len(page.results),
                          "total": page.total, "html": html}, 200)


def _thumbnail(request: flask.Request, handler: Any, settings: Settings, job_id: str | None) -> flask.Response:
    name = request.args.get("name", "")
    if not name:
        raise InvalidRequest("name is required", field="name")
    size = request.args.get("size", "small")
    if size not in ("small", "full"):
        raise InvalidRequest("size must be small or full", field="size")
    preview = handler.thumbnail(_required_id(job_id), name, _box(request.args.get("box")), full=size == "full")
    if preview is None:
        raise NotFound(f"no preview of {name}", field="name")
    response = flask.Response(preview, status=200, content_type="image/jpeg")
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


def _box(raw: str | None) -> tuple[float, float, float, float] | None:
    """?box=x0,y0,x1,y1 (fractions of the photo): the detector's box, drawn on the preview."""
    if not raw:
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in raw.split(","))
    except ValueError:
        raise InvalidRequest("box must be four numbers x0,y0,x1,y1 from 0 to 1", field="box") from None
    if not (0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1):
        raise InvalidRequest("box must be four numbers x0,y0,x1,y1 from 0 to 1", field="box")
    return x0, y0, x1, y1


def _index(request: flask.Request, handler: Any, settings: Settings, job_id: str | None) -> flask.Response:
    from common.domain.taxonomy import class_vocabulary
    from common.pages import render_index

    page = render_index(handler(), class_vocabulary(), request.script_root + JOB_PATH)
    return flask.Response(page, status=200, content_type="text/html; charset=utf-8")


RESPONDERS = {Action.CREATE: _create, Action.STATUS: _status, Action.CLOSE: _act, Action.RETRY: _act,
              Action.UNDO: _undo, Action.REPORT: _report, Action.RESULTS: _results, Action.THUMBNAIL: _thumbnail,
              Action.INDEX: _index, Action.CORRECT: _correct}


def dispatch(request: flask.Request, handlers: Handlers, settings: Callable[[], Settings],
             root_is_collection: bool = True) -> flask.Response:
    """Answer a request with the use case its route names. A function's root ("/") is the job collection (a
    function URL is POSTed to directly); the embedded server's root is its jobs index."""
    return hardened(_dispatch(request, with_pages(handlers), settings, root_is_collection))


@guarded
def _dispatch(request: flask.Request, handlers: Handlers, settings: Callable[[], Settings],
              root_is_collection: bool) -> flask.Response:
    config = settings()
    check_host(request.headers.get("Host"), config.allowed_hosts)  # before anything, a 404 included
    path = JOB_PATH if root_is_collection and request.path.rstrip("/") == "" else request.path
    found = match(request.method, path, request.args.get("id"), served=handlers.keys())
    check_boundary(request, config.allowed_hosts, config.status_url_base)
    check_auth(request, config.service_key)
    return RESPONDERS[found.route.action](request, handlers[found.route.action](), config, found.job_id)


def create_app(handlers: Handlers, settings: Settings) -> flask.Flask:
    """Every route over one backend (used by `imgclassify serve`): it answers to the loopback names and the
    configured ones (`settings.allowed_hosts`), whatever else is set."""
    settings = dataclasses.replace(settings, allowed_hosts=(*LOOPBACK_HOSTS, *settings.allowed_hosts))
    app = flask.Flask("imgclassify")

    @app.before_request
    def host_and_options() -> flask.Response | None:
        # A wrong Host is refused before anything, Flask's own answers (a method no route has) included.
        # Flask's automatic OPTIONS answer is an empty text/html page: answer in JSON, from the route table.
        try:
            check_host(flask.request.headers.get("Host"), settings.allowed_hosts)
        except ClientError as exc:
            return client_error_response(exc)
        if flask.request.method != "OPTIONS":
            return None
        try:
            check_boundary(flask.request, settings.allowed_hosts, settings.status_url_base)
            match("OPTIONS", flask.request.path, served=with_pages(handlers).keys())
        except MethodNotAllowed as exc:
            allowed = allowed_methods(exc)
            response = json_response({"code": 200, "allow": allowed}, 200)
            response.headers["Allow"] = ", ".join(allowed)
            return response
        except ClientError as exc:
            return client_error_response(exc)
        return None

    def serve(path: str = "") -> flask.Response:
        return dispatch(flask.request, handlers, lambda: settings, root_is_collection=False)

    for rule in ("/", "/<path:path>"):
        app.add_url_rule(rule, rule, serve, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])

    @app.after_request
    def headers(response: flask.Response) -> flask.Response:
        return hardened(response)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> flask.Response:
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> flask.Response:
        log.exception("unhandled error")
        return error_response(500, "internal error")

    return app
