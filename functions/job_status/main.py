"""HTTP function: GET /classification-job/<id> (or ?id=) -> the job's counters. Logic lives in common/."""
import functools

import functions_framework
import flask

from common.backends import service_from_env
from common.http import job_status_response

# job_status never publishes: skip creating a Pub/Sub client.
_service = functools.partial(service_from_env, with_publisher=False)


@functions_framework.http
def job_status(request: flask.Request) -> flask.Response:
    return job_status_response(request, _service)
