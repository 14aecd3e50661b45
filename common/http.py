"""HTTP handling shared by the create_job and job_status functions and the embedded server.

Every response is JSON, errors included: the status code says what kind of problem, `field` says where.
"""
from __future__ import annotations

import functools
import hmac
import json
from collections.abc import Callable
from typing import Any

import flask
from werkzeug.exceptions import HTTPException

from common.errors import (ClientError, ConfigurationError, InvalidRequest, MethodNotAllowed, NotFound,
                           PayloadTooLarge, TransientError, Unauthorized)
from common.logs import get_logger
from common.service import ClassificationService

log = get_logger("http")

ServiceProvider = Callable[[], ClassificationService]
JOB_PATH = "/classification-job"


def json_response(body: dict[str, Any], status: int) -> flask.Response:
    return flask.Response(json.dumps(body), status=status, mimetype="application/json")


def error_response(status: int, message: str, **extra: object) -> flask.Response:
    return json_response({"code": status, "message": message, **extra}, status)


def guarded(handler: Callable[..., flask.Response]) -> Callable[..., flask.Response]:
    """Turn every failure into a JSON error; log what the user cannot fix."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> flask.Response:
        try:
            return handler(*args, **kwargs)
        except ClientError as exc:
            return json_response(exc.to_json(), exc.status)
        except ConfigurationError as exc:
            log.error("service misconfigured", extra={"error": str(exc)})
            return error_response(503, f"service misconfigured: {exc}")
        except TransientError as exc:
            log.warning("dependency unavailable", extra={"error": str(exc)})
            return error_response(503, f"temporarily unavailable, retry: {exc}")
        except HTTPException as exc:
            return error_response(exc.code or 500, exc.description or exc.name)
        except Exception:
            log.exception("unhandled error")
            return error_response(500, "internal error")

    return wrapper


def check_auth(request: flask.Request, service_key: str) -> None:
    if not service_key:
        return
    supplied = request.headers.get("Authorization", "")
    if supplied.lower().startswith("bearer "):
        supplied = supplied[7:]
    if not hmac.compare_digest(supplied.encode("utf-8"), service_key.encode("utf-8")):
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


@guarded
def create_job_response(request: flask.Request, provide: ServiceProvider) -> flask.Response:
    if request.path.rstrip("/") not in ("", JOB_PATH):
        raise NotFound(f"no such path {request.path}; POST {JOB_PATH}")
    if request.method != "POST":
        raise MethodNotAllowed(f"use POST {JOB_PATH}", field="method")
    service = provide()
    check_auth(request, service.settings.service_key)
    body = read_json_body(request, service.settings.max_body_bytes)
    view = service.create_job(body)
    response = json_response(view, 201)
    response.headers["Location"] = view["status_url"]
    return response


@guarded
def job_status_response(request: flask.Request, provide: ServiceProvider,
                        job_id: str | None = None) -> flask.Response:
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowed(f"use GET {JOB_PATH}/<id>", field="method")
    if job_id is None:
        path = request.path.rstrip("/")
        if path.startswith(JOB_PATH + "/"):
            job_id = path[len(JOB_PATH) + 1:]
        elif path in ("", JOB_PATH):
            job_id = request.args.get("id")
        else:
            raise NotFound(f"no such path {request.path}; GET {JOB_PATH}/<id>")
    if not job_id:
        raise InvalidRequest("job id is required: GET /classification-job/<id> or ?id=<id>", field="id")
    service = provide()
    check_auth(request, service.settings.service_key)
    return json_response(service.status(job_id), 200)


def create_app(provide: ServiceProvider) -> flask.Flask:
    """The old Flask service's two routes over any backend (used by `imgclassify serve`)."""
    app = flask.Flask("imgclassify")

    @app.route(JOB_PATH, methods=["POST"])
    def post_job() -> flask.Response:
        return create_job_response(flask.request, provide)

    @app.route(f"{JOB_PATH}/<path:job_id>", methods=["GET"])
    def get_job(job_id: str) -> flask.Response:
        return job_status_response(flask.request, provide, job_id)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> flask.Response:
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> flask.Response:
        log.exception("unhandled error")
        return error_response(500, "internal error")

    return app
