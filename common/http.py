"""The HTTP layer, shared by the create_job and job_status functions and the embedded server: the only place that
knows status codes. Every response is JSON, errors included: the status says what kind of problem, `field` where.
"""
from __future__ import annotations

import base64
import functools
import hmac
import json
from collections.abc import Callable
from typing import Any

import flask
from werkzeug.exceptions import HTTPException

from common.config import Settings
from common.domain.errors import (ClientError, ConfigurationError, Conflict, FanOutInterrupted, InvalidRequest,
                                  NotFound, Overloaded, TransientError)
from common.logs import get_logger

log = get_logger("http")

JOB_PATH = "/classification-job"
RETRY_AFTER_TRANSIENT = 5  # seconds: a dependency's 503 usually passes quickly
RETRY_AFTER_MISCONFIGURED = 60  # an operator must act; do not hammer

CreateJobHandler = Callable[[object], dict[str, Any]]
JobStatusHandler = Callable[[str], dict[str, Any]]
JobActionHandler = Callable[[str], dict[str, Any]]  # undo, close: POST /classification-job/<id>/<action>
UndoJobHandler = JobActionHandler
ACTIONS = ("undo", "close")
Provider = Callable[[], Any]


class Unauthorized(ClientError):
    """No or the wrong service key."""


class MethodNotAllowed(ClientError):
    """The path exists; the method does not."""


class PayloadTooLarge(ClientError):
    """The body is over the configured limit."""


# Most specific first: the first class an error is an instance of decides its status.
STATUS_OF: tuple[tuple[type[ClientError], int], ...] = (
    (Unauthorized, 401), (NotFound, 404), (MethodNotAllowed, 405), (Conflict, 409), (PayloadTooLarge, 413),
    (Overloaded, 429), (InvalidRequest, 400), (ClientError, 400))


def status_of(exc: ClientError) -> int:
    return next(status for kind, status in STATUS_OF if isinstance(exc, kind))


def json_response(body: dict[str, Any], status: int) -> flask.Response:
    return flask.Response(json.dumps(body), status=status, mimetype="application/json")


def error_response(status: int, message: str, retry_after: int | None = None, **extra: object) -> flask.Response:
    response = json_response({"code": status, "message": message, **extra}, status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def client_error_response(exc: ClientError) -> flask.Response:
    status = status_of(exc)
    response = json_response({"code": status, **exc.to_json()}, status)
    if isinstance(exc, Overloaded):
        response.headers["Retry-After"] = str(exc.retry_after)
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
    it (Basic, the key as the password, any user name)."""
    supplied = request.headers.get("Authorization", "")
    scheme, _, credentials = supplied.partition(" ")
    if scheme.lower() == "bearer":
        return credentials
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return ""
    return supplied


def check_auth(request: flask.Request, service_key: str) -> None:
    if not service_key:
        return
    if not hmac.compare_digest(supplied_key(request).encode("utf-8"), service_key.encode("utf-8")):
        raise Unauthorized("missing or wrong Authorization header", field="Authorization")


def read_json_body(request: flask.Request, max_bytes: int) -> object:
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"request body larger than {max_bytes} bytes", field="body")
    raw = request.get_data(cache=False)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body larger than {max_bytes} bytes", field="body")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidRequest("request body must be JSON, e.g. {\"classes\": [\"dog\"]}", field="body") from None
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply", field="body") from None


def status_url(settings: Settings, job_id: str) -> str:
    return f"{settings.status_url_base.rstrip('/')}{JOB_PATH}/{job_id}"


def job_response(view: dict[str, Any], status: int, settings: Settings) -> flask.Response:
    """A job's view as the old service answered it: `code` first, then the fields, then where to poll."""
    url = status_url(settings, view["id"])
    response = json_response({"code": status, **view, "status_url": url}, status)
    if status == 201:
        response.headers["Location"] = url
    return response


@guarded
def job_action_response(request: flask.Request, action: str, handler: Callable[[], JobActionHandler],
                        settings: Callable[[], Settings], job_id: str) -> flask.Response:
    if request.method != "POST":
        raise MethodNotAllowed(f"use POST {JOB_PATH}/<id>/{action}", field="method")
    config = settings()
    check_auth(request, config.service_key)
    answer = handler()(job_id)
    if action == "close":  # the job's status, as GET answers it
        return job_response(answer, 200, config)
    return json_response({"code": 200, **answer}, 200)


@guarded
def create_job_response(request: flask.Request, handler: Callable[[], CreateJobHandler],
                        settings: Callable[[], Settings],
                        actions: dict[str, Callable[[], JobActionHandler]] | None = None) -> flask.Response:
    path = request.path.rstrip("/")
    job_id, action = _job_and_action(path)
    if actions and action in actions:
        return job_action_response(request, action, actions[action], settings, job_id)
    if path not in ("", JOB_PATH):
        raise NotFound(f"no such path {request.path}; POST {JOB_PATH}", field="path")
    if request.method != "POST":
        raise MethodNotAllowed(f"use POST {JOB_PATH}", field="method")
    config = settings()
    check_auth(request, config.service_key)
    body = read_json_body(request, config.max_body_bytes)
    return job_response(handler()(body), 201, config)


def _job_and_action(path: str) -> tuple[str, str]:
    """"/classification-job/<id>/<action>" -> (id, action); ("", "") for any other path."""
    job_id, _, action = path.removeprefix(JOB_PATH + "/").rpartition("/")
    return (job_id, action) if path.startswith(JOB_PATH + "/") and job_id else ("", "")


def report_response(request: flask.Request, report: Any, job_id: str) -> flask.Response:
    """The results page (?format=html|csv|jsonl), with previews fetched through this same service."""
    fmt = request.args.get("format", "html")
    content_type, body = report(job_id, fmt, thumbnail_url=lambda name: _thumbnail_url(request, job_id, name),
                                live=True)
    response = flask.Response(body, status=200, content_type=content_type)
    if fmt != "html":
        response.headers["Content-Disposition"] = f'attachment; filename="{job_id}.{fmt}"'
    return response


def _thumbnail_url(request: flask.Request, job_id: str, name: str) -> str:
    from urllib.parse import quote

    base = request.script_root + JOB_PATH
    return f"{base}/{job_id}/thumbnail?name={quote(name, safe='')}"


def thumbnail_response(request: flask.Request, report: Any, job_id: str) -> flask.Response:
    name = request.args.get("name", "")
    if not name:
        raise InvalidRequest("name is required", field="name")
    preview = report.thumbnail(job_id, name)
    if preview is None:
        raise NotFound(f"no preview of {name}", field="name")
    response = flask.Response(preview, status=200, content_type="image/jpeg")
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


@guarded
def job_status_response(request: flask.Request, handler: Callable[[], JobStatusHandler],
                        settings: Callable[[], Settings], job_id: str | None = None,
                        report: Callable[[], Any] | None = None) -> flask.Response:
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowed(f"use GET {JOB_PATH}/<id>", field="method")
    path = request.path.rstrip("/")
    action_id, action = _job_and_action(path)
    respond = {"report": report_response, "thumbnail": thumbnail_response}.get(action)
    if report is not None and respond is not None:
        check_auth(request, settings().service_key)
        return respond(request, report(), action_id)
    if job_id is None:
        if path.startswith(JOB_PATH + "/"):
            job_id = path[len(JOB_PATH) + 1:]
        elif path in ("", JOB_PATH):
            job_id = request.args.get("id")
        else:
            raise NotFound(f"no such path {request.path}; GET {JOB_PATH}/<id>", field="path")
    if not job_id:
        raise InvalidRequest("job id is required: GET /classification-job/<id> or ?id=<id>", field="id")
    config = settings()
    check_auth(request, config.service_key)
    return job_response(handler()(job_id), 200, config)


def _action_view(action: str, handler: JobActionHandler, settings: Settings) -> Callable[[str], flask.Response]:
    def view(job_id: str) -> flask.Response:
        return job_action_response(flask.request, action, lambda: handler, lambda: settings, job_id)

    return view


def create_app(create_job: CreateJobHandler, job_status: JobStatusHandler, settings: Settings,
               undo_job: JobActionHandler | None = None, close_job: JobActionHandler | None = None,
               report: Any = None, index: Callable[[], str] | None = None) -> flask.Flask:
    """The old Flask service's two routes (and undo, close) over any backend (used by `imgclassify serve`)."""
    app = flask.Flask("imgclassify")

    @app.before_request
    def options() -> flask.Response | None:
        # Flask's automatic OPTIONS answer is an empty text/html page: answer in JSON like everything else.
        if flask.request.method != "OPTIONS":
            return None
        adapter = app.url_map.bind_to_environ(flask.request.environ)
        try:
            allowed = sorted(adapter.allowed_methods())
        except HTTPException:
            allowed = []
        if not allowed:
            return error_response(404, f"no such path {flask.request.path}", field="path")
        response = json_response({"code": 200, "allow": allowed}, 200)
        response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.route(JOB_PATH, methods=["POST"])
    def post_job() -> flask.Response:
        return create_job_response(flask.request, lambda: create_job, lambda: settings)

    @app.route(f"{JOB_PATH}/<path:job_id>", methods=["GET"])
    def get_job(job_id: str) -> flask.Response:
        return job_status_response(flask.request, lambda: job_status, lambda: settings, job_id)

    if report is not None:
        def view_report(job_id: str) -> flask.Response:
            return job_status_response(flask.request, lambda: job_status, lambda: settings, job_id, lambda: report)

        app.add_url_rule(f"{JOB_PATH}/<job_id>/report", "report", view_report, methods=["GET"])
        app.add_url_rule(f"{JOB_PATH}/<job_id>/thumbnail", "thumbnail", view_report, methods=["GET"])
    if index is not None:
        @app.route("/", methods=["GET"])
        @guarded
        def jobs_index() -> flask.Response:
            check_auth(flask.request, settings.service_key)
            return flask.Response(index(), status=200, content_type="text/html; charset=utf-8")

    for action, handler in (("undo", undo_job), ("close", close_job)):
        if handler is not None:
            app.add_url_rule(f"{JOB_PATH}/<job_id>/{action}", f"{action}_job", methods=["POST"],
                             view_func=_action_view(action, handler, settings))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> flask.Response:
        field = "method" if exc.code == 405 else "path" if exc.code == 404 else None
        extra = {"field": field} if field else {}
        return error_response(exc.code or 500, exc.description or exc.name, **extra)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> flask.Response:
        log.exception("unhandled error")
        return error_response(500, "internal error")

    return app
