"""How a simulated request's failure is told: one record per failed request, and one line
that names each provider's part, so requests that met the same faults group together.
"""

from __future__ import annotations

import re
from typing import Any

from .._errors import (
    AllProvidersFailedError,
    DeadlineExceededError,
    NoProviderAvailableError,
    ProviderError,
)

__all__ = ["error_text", "failure", "reason"]


def failure(
    request: int, sent: float, failed: float | None, error: str, reason: str
) -> dict[str, Any]:
    return {
        "request": request,
        "sent_at": round(sent, 3),
        "failed_at": None if failed is None else round(failed, 3),
        "error": error,
        "reason": reason,
    }


# A skip reason's wait ("rate limited for 0.125s") differs between requests skipped
# for the same cause; without it, such failures group together.
_WAIT = re.compile(r" for \d+(\.\d+)?s$")


def reason(exc: Exception) -> str:
    """Why a request failed, in one line naming each provider's part.

    Example:
        >>> skipped = {"a": "circuit open", "b": "rate limited for 0.2s"}
        >>> reason(NoProviderAvailableError("m", skipped, retry_after=0.2))
        'no provider could take it: a circuit open; b rate limited'
    """
    if isinstance(exc, NoProviderAvailableError):
        why = "; ".join(f"{n} {_WAIT.sub('', w)}" for n, w in exc.reasons.items())
        return f"no provider could take it: {why}"
    if isinstance(exc, AllProvidersFailedError):
        # Without the attempt count: requests that met the same faults group together.
        parts = [f"{n} raised {error_text(e)}" for n, e in exc.errors.items()]
        parts += [f"{n} skipped: {_WAIT.sub('', w)}" for n, w in exc.skipped.items()]
        why = "; ".join(parts) or "no provider tried"
        return f"{exc.limit} exceeded: {why}" if isinstance(exc, DeadlineExceededError) else why
    return error_text(exc)


def error_text(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, ProviderError):
        text = text.removeprefix(f"provider {exc.provider!r}: ")
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
