"""The retry policy at the cloud boundary, for every Google client call the adapters make."""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions

from common.domain.errors import ConfigurationError, TransientError

# The retry policy at the cloud boundary: Google's retryable API errors (and dropped connections) may pass, so they
# become TransientError; a denied permission is an operator's to fix, so it becomes ConfigurationError. Everything
# else (NotFound, Conflict, precondition failures) is handled where it means something, or is a bug.
RETRYABLE = (gexc.ServiceUnavailable, gexc.InternalServerError, gexc.DeadlineExceeded, gexc.TooManyRequests,
             gexc.Aborted, gexc.GatewayTimeout, gexc.BadGateway, gexc.RetryError, gexc.ResourceExhausted,
             auth_exceptions.TransportError, requests.ConnectionError, requests.Timeout, ConnectionError,
             TimeoutError, concurrent.futures.TimeoutError)
DENIED = (gexc.PermissionDenied, gexc.Forbidden, gexc.Unauthenticated, gexc.Unauthorized,
          auth_exceptions.DefaultCredentialsError, auth_exceptions.RefreshError)

Result = TypeVar("Result")


@contextlib.contextmanager
def cloud_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except RETRYABLE as exc:
        raise TransientError(f"{operation}: {type(exc).__name__}: {exc}") from exc
    except DENIED as exc:
        raise ConfigurationError(f"{operation}: permission denied ({exc}); grant the service's account the "
                                 "roles in the README's deployment section") from exc


def translated(operation: str) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    def decorate(method: Callable[..., Result]) -> Callable[..., Result]:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Result:
            with cloud_errors(operation):
                return method(*args, **kwargs)

        return wrapper

    return decorate
