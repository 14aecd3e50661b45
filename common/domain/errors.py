"""The service's exception hierarchy. What each error means is decided here; what HTTP status it becomes is
decided only in common/http.py, and what Pub/Sub does with it only in the classify_image use case:

- `ClientError` (and subclasses): the caller asked for something wrong; `field` names where, `details` says more.
- `TransientError`: a dependency failed in a way that may pass. The adapters raise it for retryable cloud errors
  and their local equivalents; HTTP answers 503 with Retry-After, classify_image raises it so Pub/Sub redelivers.
- `ConfigurationError`: the service is set up wrong (weights missing, permission denied): an operator must act.
- `PermanentImageError` / `ObjectMissing`: this image can never be classified: it is counted as failed, acked.
- `BadMessage`: a Pub/Sub message that does not follow the schema: logged and acked.
"""
from __future__ import annotations


class ServiceError(Exception):
    """Base class for every error this service raises on purpose."""


class ClientError(ServiceError):
    def __init__(self, message: str, field: str | None = None, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"message": self.message}
        if self.field is not None:
            body["field"] = self.field
        body.update(self.details)
        return body


class InvalidRequest(ClientError):
    """The request is malformed or asks for something impossible."""


class NotFound(ClientError):
    """The job (or path) asked for does not exist."""


class Conflict(ClientError):
    """The request contradicts what exists (a request_id reused for a different job)."""


class Overloaded(ClientError):
    """Too much work in flight: retry later."""

    def __init__(self, message: str, retry_after: int, field: str | None = None, **details: object) -> None:
        super().__init__(message, field, **details)
        self.retry_after = retry_after


class ConfigurationError(ServiceError):
    """The service is set up wrong (missing weights, unknown model, permission denied): an operator must act."""


class BadMessage(ServiceError):
    """A Pub/Sub message that does not follow the schema: retrying cannot fix it."""


class PermanentImageError(ServiceError):
    """This image can never be classified (not an image, unreadable, too large): count it as failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TruncatedImage(PermanentImageError):
    """The file ends before the image does: permanent for an object written whole (a bucket), possibly still
    being written on a disk, where the embedded runner retries it."""


class ObjectMissing(ServiceError):
    """The object named in a message no longer exists."""


class CallbackRefused(ServiceError):
    """A callback URL, or an address its host resolves to, that callbacks may not reach: never retried."""


class TransientError(ServiceError):
    """A dependency failed in a way that may pass: the caller should retry."""


class PublishError(TransientError):
    """Some fan-out messages could not be published."""


class FanOutInterrupted(TransientError):
    """create_job could not list or publish every image; the job records why, and a retry of the same request
    (same request_id) resumes it."""

    def __init__(self, message: str, job_id: str, resumable: bool) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.resumable = resumable


class InvalidExamples(PermanentImageError):
    """A job's example photos cannot define its classes (too few readable, or the model gives no features): every
    image of the job fails with this reason, which names the class and what to do."""
