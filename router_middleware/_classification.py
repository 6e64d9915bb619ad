"""The vocabulary of failures: each :class:`ErrorKind`, and what the router does about it.

A classifier (see ``_classify``) maps an exception to a :class:`Classification`; the
router reads only its kind's :class:`ErrorPolicy`, its status and its ``retry_after``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Final, TypeAlias

__all__ = ["POLICIES", "Classification", "ErrorClassifier", "ErrorKind", "ErrorPolicy"]


class ErrorKind(str, Enum):
    """The router-relevant kind of a failure; see :data:`POLICIES` for what each implies."""

    TRANSIENT = "transient"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    MISCONFIGURED = "misconfigured"
    CONTEXT_LENGTH = "context_length"
    INVALID_REQUEST = "invalid_request"
    CONTENT_POLICY = "content_policy"
    INVALID_OUTPUT = "invalid_output"
    NOT_PROVIDER = "not_provider"


@dataclass(frozen=True, slots=True)
class ErrorPolicy:
    """What the router does about one kind of failure.

    Example:
        >>> POLICIES[ErrorKind.TIMEOUT]
        ErrorPolicy(retry=False, failover=True, counts_for_breaker=True)
    """

    retry: bool
    failover: bool
    counts_for_breaker: bool


_POLICY_TABLE = {
    ErrorKind.TRANSIENT: ErrorPolicy(retry=True, failover=True, counts_for_breaker=True),
    # Being throttled says nothing about the provider's health.
    ErrorKind.RATE_LIMITED: ErrorPolicy(retry=True, failover=True, counts_for_breaker=False),
    # A timed-out call already spent its budget; waiting that long again on the same
    # provider is the worst use of what is left of the deadline.
    ErrorKind.TIMEOUT: ErrorPolicy(retry=False, failover=True, counts_for_breaker=True),
    ErrorKind.MISCONFIGURED: ErrorPolicy(retry=False, failover=True, counts_for_breaker=True),
    # The request, not the provider, is at fault; a bigger or laxer model may take it.
    ErrorKind.CONTEXT_LENGTH: ErrorPolicy(retry=False, failover=True, counts_for_breaker=False),
    ErrorKind.INVALID_REQUEST: ErrorPolicy(retry=False, failover=True, counts_for_breaker=False),
    # An answer that does not fit the schema: another provider may well give one that does.
    ErrorKind.INVALID_OUTPUT: ErrorPolicy(retry=False, failover=True, counts_for_breaker=True),
    # Asking another model the same thing to get around a refusal is not our call.
    ErrorKind.CONTENT_POLICY: ErrorPolicy(retry=False, failover=False, counts_for_breaker=False),
    ErrorKind.NOT_PROVIDER: ErrorPolicy(retry=False, failover=False, counts_for_breaker=False),
}
POLICIES: Final[Mapping[ErrorKind, ErrorPolicy]] = MappingProxyType(_POLICY_TABLE)
"""Kind -> what the router does about it. Read-only."""


@dataclass(frozen=True, slots=True)
class Classification:
    """A classified failure.

    Attributes:
        kind: what went wrong.
        retry_after: seconds the provider asked us to wait, if it said so.
        status: the HTTP status the error carried, if any.
        override: the policy to apply instead of the kind's (the router's config may
            change what some kinds mean).

    Example:
        >>> Classification(ErrorKind.TRANSIENT, status=503).policy.retry
        True
    """

    kind: ErrorKind
    retry_after: float | None = None
    status: int | None = None
    override: ErrorPolicy | None = None

    @property
    def policy(self) -> ErrorPolicy:
        return self.override or POLICIES[self.kind]


ErrorClassifier: TypeAlias = Callable[[BaseException], Classification | None]
"""A classifier returns ``None`` to defer to the next one (and finally the default)."""
