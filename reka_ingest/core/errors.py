"""The one exception root of reka-ingest, split into "try again" and "never again".

    IngestError
    +-- RetryableError                  try again later; the cause is passing
    |   +-- ApiTransportError           no HTTP answer at all
    |   |   +-- ApiTimeout
    |   |   +-- ApiConnectionError      refused, reset, dropped mid-response
    |   +-- ApiServerError              5xx
    |   +-- ApiRateLimited              429, with retry-after and the rate-limit headers
    +-- PermanentError                  the same call will fail the same way
        +-- SettingsError               a setting is missing or wrong; names the variable
        +-- FileRejected                a file cannot be uploaded; carries a reason code
        +-- ApiClientError              4xx other than 429
        |   +-- ApiAuthError            401
        |   +-- ApiValidationError      400, with `param`
        |   |   +-- ApiPayloadTooLarge  413, with `param`
        |   +-- ApiNotFound             404
        +-- ApiProtocolError            an answer we cannot read (bad JSON, wrong shape)
        +-- ApiUsageError               the client was called wrongly (bad URL, bad argument)
        +-- PlaceUnwritable             a place the service must write refuses (read-only, full)
        +-- PortUnavailable             an address it must listen on cannot be bound (port taken)
    +-- LeaseLost                       a run no longer holds its batch: it stops, writing nothing

The operating system's errors about those two (an OSError) are translated in
`reka_ingest.core.places`, where the service writes or listens, and at the
command line's top (`reka_ingest.cli.main`), so a command says one line.

Every Api* error carries the response's `X-Request-ID` (None when there was no
response). Foreign exceptions (httpx, json) are translated once, where they
enter, in `reka_ingest.reka.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class IngestError(Exception):
    """Root of every error this project raises on purpose."""

    retryable: bool = False


class RetryableError(IngestError):
    """The cause is passing: a later attempt may succeed."""

    retryable = True


class PermanentError(IngestError):
    """The same attempt will fail the same way; record it and move on."""

    retryable = False


class LedgerUnavailable(RetryableError):
    """The ledger database does not answer: work waits and is tried again."""


class LeaseLost(IngestError):
    """An upload run no longer holds its batch: its lease ran out and another run
    claimed the batch since. Neither passing nor permanent for the batch (the
    other run sends it): this run stops where it is, having written nothing."""

    def __init__(self, batch_id: int, claim: int) -> None:
        super().__init__(f"batch {batch_id}: claim {claim} no longer holds it (its lease ran out)")
        self.batch_id = batch_id
        self.claim = claim

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.batch_id, self.claim))


class SettingsError(PermanentError):
    """A setting is missing or has a wrong value; the message names the variable."""


class LedgerMissing(SettingsError):
    """A command that reads a deployment was pointed at a SQLite ledger that does not
    exist: nothing has run there (the wrong folder, or INGEST_DATA_DIR unset)."""


class LedgerUnreadable(PermanentError):
    """The ledger's database answers but cannot be used as one (a damaged file,
    something that is not a database): no retry mends it; a person must."""


class PlaceUnwritable(PermanentError):
    """A file or folder the service must write (the data folder, the ledger's migration
    lock, beat's schedule, a log) refuses: read-only, no permission, no room. A person
    must mend it; the message names the place and the system's reason."""


class PortUnavailable(PermanentError):
    """An address a server of the service must listen on cannot be bound: its port is
    taken (by an earlier run, another program) or the address is not this machine's.
    The message names the address and the setting or option that chose it."""


class FileRejected(PermanentError):
    """A file that will never upload as it is (empty, not an image, too large, ...).

    `reason` is a `reka_ingest.core.states.Reason` value; the message is for a person.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.message))


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """The rate-limit headers of one response; None where a header was absent."""

    limit: int | None = None
    remaining: int | None = None
    reset_seconds: float | None = None
    retry_after_seconds: float | None = None


class ApiError(IngestError):
    """Something went wrong talking to the Reka API.

    `status` is the HTTP status (None when no response arrived); `error_type`,
    `param` and `details` come from the error envelope when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        error_type: str | None = None,
        param: str | None = None,
        details: list[Any] | None = None,
        rate_limit: RateLimitInfo | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id
        self.error_type = error_type
        self.param = param
        self.details = details
        self.rate_limit = rate_limit or RateLimitInfo()

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.error_type:
            parts.append(f"type={self.error_type}")
        if self.param:
            parts.append(f"param={self.param}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructor: teach pickle (Celery, multiprocessing) to rebuild us.
        return (_rebuild_api_error, (type(self), self.message, self.__dict__.copy()))


def _rebuild_api_error(cls: type[ApiError], message: str, state: dict[str, Any]) -> ApiError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class ApiTransportError(ApiError, RetryableError):
    """No HTTP answer arrived.

    `maybe_sent`: the request may have reached the server, which may have done
    its work (a timeout or a connection dropped mid-way). False only when no
    connection was ever made, so nothing was sent.
    """

    maybe_sent: bool = True


class ApiTimeout(ApiTransportError):
    """Connecting, writing, reading or waiting for a pooled connection took too long."""


class ApiConnectionError(ApiTransportError):
    """The connection was refused, reset, or dropped before a whole answer arrived."""


class ApiServerError(ApiError, RetryableError):
    """The API answered 5xx."""


class ApiRateLimited(ApiError, RetryableError):
    """The API answered 429. `retry_after` is how long it asked us to wait, in seconds."""

    @property
    def retry_after(self) -> float | None:
        info = self.rate_limit
        if info.retry_after_seconds:
            return info.retry_after_seconds
        if info.remaining == 0 and info.reset_seconds is not None:
            return info.reset_seconds
        return info.retry_after_seconds


class ApiClientError(ApiError, PermanentError):
    """The API answered 4xx (other than 429): the request itself is wrong."""


class ApiAuthError(ApiClientError):
    """401: the API key is missing or unknown."""


class ApiValidationError(ApiClientError):
    """400: the request was malformed; `param` names the part when the API says."""


class ApiPayloadTooLarge(ApiValidationError):
    """413: too many images, an image too large, or a request body too large."""


class ApiNotFound(ApiClientError):
    """404: no such image."""


class ApiProtocolError(ApiError, PermanentError):
    """The API answered something we cannot read: not JSON, or not the documented shape."""


class ApiUsageError(ApiError, PermanentError):
    """The client was called wrongly: an invalid URL or argument. A bug, not a passing fault."""
