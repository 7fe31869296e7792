"""One exception tree for all of Keel.

Every error carries a stable machine ``code``, an HTTP ``status`` used when it crosses the
server boundary, and an optional ``hint`` that tells the user what to do next. Foreign errors
(SQLAlchemy, httpx, provider SDKs) are mapped into this tree at the boundary where they occur.
"""

from __future__ import annotations

from typing import Any


class KeelError(Exception):
    """Base of every error Keel raises on purpose."""

    code = "keel_error"
    status = 500

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        details: dict[str, Any] | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or {}
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(KeelError):
    """Settings or a config file are invalid."""

    code = "config_error"
    status = 400


class InvalidInputError(KeelError):
    """A request or argument is malformed."""

    code = "invalid_request"
    status = 400


class NotFoundError(KeelError):
    """The thing asked for by id or name does not exist."""

    code = "not_found"
    status = 404


class ConflictError(KeelError):
    """The request conflicts with stored state (a duplicate name, an immutable record)."""

    code = "conflict"
    status = 409


class AuthenticationError(KeelError):
    """No API key, or an unknown or revoked one."""

    code = "unauthorized"
    status = 401


class PermissionDeniedError(KeelError):
    """The key is valid but may not do this (another project, a disallowed route or model)."""

    code = "forbidden"
    status = 403


class PayloadTooLargeError(KeelError):
    """A body is over the configured size cap (decompressed size counts)."""

    code = "payload_too_large"
    status = 413


class RateLimitedError(KeelError):
    """A rate limit or budget is exhausted; ``retry_after`` says when to come back."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class BudgetExceededError(RateLimitedError):
    """A spending budget (USD per day or month) is used up."""

    code = "budget_exceeded"


class UnavailableError(KeelError):
    """A dependency is saturated or down; retry later."""

    code = "unavailable"
    status = 503

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class StoreError(KeelError):
    """The store failed in a way that is not the caller's fault."""

    code = "store_error"
    status = 503


class ProviderError(KeelError):
    """An upstream model provider failed. ``retryable`` drives retries and fallback."""

    code = "provider_error"
    status = 502

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.upstream_status = upstream_status
        self.retryable = retryable
        self.retry_after = retry_after


class GateFailedError(KeelError):
    """An evaluator gate did not hold (eval CI, protected labels, releases)."""

    code = "gate_failed"
    status = 409
