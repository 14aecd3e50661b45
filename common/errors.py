"""The service's exception hierarchy.

Every error a user can cause is a `ClientError` carrying an HTTP status and, where one is to blame, the request field;
the HTTP layer turns it into a JSON body. Errors in classify_image are split by what Pub/Sub should do next: a
`TransientError` propagates so the message is redelivered, a `PermanentImageError` is recorded as a failed image
and acked, a `BadMessage` is logged and acked.
"""
from __future__ import annotations


class ServiceError(Exception):
    """Base class for every error this service raises on purpose."""


class ClientError(ServiceError):
    status = 400

    def __init__(self, message: str, field: str | None = None, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.status, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        body.update(self.details)
        return body


class InvalidRequest(ClientError):
    status = 400


class Unauthorized(ClientError):
    status = 401


class NotFound(ClientError):
    status = 404


class MethodNotAllowed(ClientError):
    status = 405


class PayloadTooLarge(ClientError):
    status = 413


class ConfigurationError(ServiceError):
    """The service is set up wrong (missing weights, unknown model): an operator must act."""


class BadMessage(ServiceError):
    """A Pub/Sub message that does not follow the schema: retrying cannot fix it."""


class PermanentImageError(ServiceError):
    """This image can never be classified (not an image, truncated, too large): count it as failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ObjectMissing(ServiceError):
    """The object named in a message no longer exists."""


class TransientError(ServiceError):
    """A dependency failed in a way that may pass: the caller should retry."""


class PublishError(TransientError):
    """Some fan-out messages could not be published."""
