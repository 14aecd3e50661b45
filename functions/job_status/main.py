"""HTTP function: GET /classification-job/<id> (or ?id=) -> the job's counters; …/<id>/report the results page
(?format=csv|jsonl for the per-image results), …/<id>/thumbnail?name= its previews. Logic lives in common/."""
import functions_framework
import flask

from common import bootstrap
from common.http import dispatch
from common.routes import Action

HANDLERS = bootstrap.handlers(Action.STATUS, Action.REPORT, Action.THUMBNAIL)


@functions_framework.http
def job_status(request: flask.Request) -> flask.Response:
    return dispatch(request, HANDLERS, bootstrap.settings)
