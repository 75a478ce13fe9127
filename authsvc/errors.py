"""Domain errors. The transport layer maps each to a gRPC status or a CLI exit code.

Lower layers raise these; they never know about gRPC.
"""

from __future__ import annotations


class AuthsvcError(Exception):
    """Base class; `reason` is a stable machine-readable string (gRPC ErrorInfo.reason)."""

    reason = "INTERNAL"


class InvalidInput(AuthsvcError, ValueError):
    """The caller sent something malformed; `field` names the offending request field."""

    reason = "INVALID_INPUT"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.description = message


class NotFound(AuthsvcError, LookupError):
    reason = "NOT_FOUND"


class EncoderMismatch(AuthsvcError):
    """A probe and a template come from different encoders (or versions)."""

    reason = "ENCODER_MISMATCH"


class PreconditionFailed(AuthsvcError):
    """The request is well formed but the customer's state forbids it (opted out, no step-up pending)."""

    reason = "FAILED_PRECONDITION"


class IntegrityError(AuthsvcError):
    """Stored data failed authentication (tampered, moved or decrypted with the wrong key)."""

    reason = "TEMPLATE_INTEGRITY"


class ConfigError(AuthsvcError):
    """Configuration (policy file, key file, model folder) is unusable."""

    reason = "CONFIG"


class Overloaded(AuthsvcError):
    """The service refused new work rather than queue it without bound.

    `retry_after_s` is the server's estimate of when capacity frees up; the
    transport sends it as a google.rpc RetryInfo so clients back off by it.
    """

    reason = "OVERLOADED"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unauthenticated(AuthsvcError):
    """No credential, or one that does not identify a principal (unknown, revoked, expired)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PermissionDenied(AuthsvcError):
    """The principal is known, but the method or the tenant is outside its grant."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AlreadyExists(AuthsvcError):
    reason = "ALREADY_EXISTS"
