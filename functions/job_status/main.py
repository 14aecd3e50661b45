"""HTTP function: GET /classification-job/<id> (or ?id=) -> the job's counters. Logic lives in common/."""
import functions_framework
import flask

from common import bootstrap
from common.http import job_status_response


@functions_framework.http
def job_status(request: flask.Request) -> flask.Response:
    return job_status_response(request, bootstrap.job_status_handler, bootstrap.settings)
