"""The error taxonomy of every API call the project makes (async operator, sync agent client)."""

from __future__ import annotations

import json
import urllib.error


class ApiError(RuntimeError):
    """An API call failed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Conflict(ApiError):
    """409: the object changed since we read it, or already exists."""


class NotFound(ApiError):
    """404."""


class Invalid(ApiError):
    """422: the API server rejected the object."""


class Forbidden(ApiError):
    """403: RBAC refused the call."""


ERRORS: dict[int, type[ApiError]] = {409: Conflict, 404: NotFound, 422: Invalid, 403: Forbidden}


def error_for(status: int, message: str) -> ApiError:
    """The exception of the right class for an HTTP status."""
    return ERRORS.get(status, ApiError)(status, message)


def from_http_error(err: urllib.error.HTTPError) -> ApiError:
    """The exception for an API server's HTTP error response (its Status message, if any)."""
    try:
        message = json.loads(err.read()).get("message", err.reason)
    except ValueError:
        message = str(err.reason)
    return error_for(err.code, str(message))
