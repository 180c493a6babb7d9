"""The API's error envelope, raised by any handler and rendered in one place.

`{"error": {"type", "message", "param"?, "details"?}}` as on Reka's errors
page; 429s also carry `code: rate_limit_exceeded` (the rate-limit page's
shape), so a client reading either field understands them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reka_ingest.core.constants import RATE_LIMIT_CODE, ErrorType

if TYPE_CHECKING:
    from reka_ingest.standin.quota import RateInfo


class ApiError(Exception):
    """An HTTP error the stand-in answers with, in Reka's envelope."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        param: str | None = None,
        details: list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.param = param
        self.details = details
        self.rate_info: RateInfo | None = None  # a 429's own rate-limit headers

    def with_rate_info(self, info: RateInfo) -> ApiError:
        self.rate_info = info
        return self

    def envelope(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.error_type == ErrorType.RATE_LIMIT:
            error["code"] = RATE_LIMIT_CODE
        if self.param is not None:
            error["param"] = self.param
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


def invalid(message: str, param: str | None = None, details: list[Any] | None = None) -> ApiError:
    """400 validation_error."""
    return ApiError(400, ErrorType.VALIDATION, message, param=param, details=details)


def too_large(message: str, param: str | None = None) -> ApiError:
    """413 validation_error: too many images, an image or the body too big."""
    return ApiError(413, ErrorType.VALIDATION, message, param=param)


def not_found(message: str) -> ApiError:
    return ApiError(404, ErrorType.NOT_FOUND, message)


def unauthenticated(message: str) -> ApiError:
    return ApiError(401, ErrorType.AUTHENTICATION, message)


def rate_limited(message: str) -> ApiError:
    return ApiError(429, ErrorType.RATE_LIMIT, message)


def server_error(message: str) -> ApiError:
    return ApiError(500, ErrorType.SERVER, message)
