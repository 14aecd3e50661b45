"""HTTP function: POST {"classes": [...]} -> 201 with the new job. Logic lives in common/."""
import functions_framework
import flask

from common import bootstrap
from common.http import create_job_response


@functions_framework.http
def create_job(request: flask.Request) -> flask.Response:
    return create_job_response(request, bootstrap.create_job_handler, bootstrap.settings)
