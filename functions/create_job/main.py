"""HTTP function: POST {"classes": [...]} -> 201 with the new job; POST /classification-job/<id>/undo removes the
copies a job made, POST /classification-job/<id>/close closes a watch job. Logic lives in common/."""
import functions_framework
import flask

from common import bootstrap
from common.http import create_job_response


@functions_framework.http
def create_job(request: flask.Request) -> flask.Response:
    return create_job_response(request, bootstrap.create_job_handler, bootstrap.settings,
                               {"undo": bootstrap.undo_job_handler, "close": bootstrap.close_job_handler})
