"""HTTP function: POST {"classes": [...]} -> 201 with the new job; POST /classification-job/<id>/undo removes the
copies a job made, POST /classification-job/<id>/close closes a watch job, POST /classification-job/<id>/corrections
corrects its photos, POST /classification-job/<id>/retry re-publishes its images that have no result. Logic lives
in common/."""
import functions_framework
import flask

from common import bootstrap
from common.http import dispatch
from common.routes import Action

HANDLERS = bootstrap.handlers(Action.CREATE, Action.UNDO, Action.CLOSE, Action.CORRECT, Action.RETRY)


@functions_framework.http
def create_job(request: flask.Request) -> flask.Response:
    return dispatch(request, HANDLERS, bootstrap.settings)
