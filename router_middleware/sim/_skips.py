"""Why the router skipped each provider, per request: its admission gates, watched.

The router tells why it skipped a provider only in the error of a request that found
no provider at all (``NoProviderAvailableError.reasons``); a request served by the
next provider leaves no trace of the skip but the ``rate_limited`` count, which lumps
a full token window with a full request bucket and omits the context window. The
simulator wants each reason, so it wraps each provider's gates in one that notes every
refusal against the request that met it (the request's index, set by the simulator in
:data:`current_request` for the task sending it). The gates' behaviour is unchanged.

Example:
    >>> reason_key("token limit for 1.250s"), reason_key("context window: ~3,000 input ...")
    ('token limit', 'context window')
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar

from .._gates import Gate, Refusal
from .._ops import AdmitOp, SettleOp

if TYPE_CHECKING:
    from .._lease import Lease
    from .._router import ResilientRouter

__all__ = ["SkipTally", "current_request", "reason_key"]

current_request: ContextVar[int | None] = ContextVar("current_request", default=None)
"""The index of the simulated request the current task sends."""

# The wait ("for 0.125s") and the details after a colon differ between requests
# skipped for the same cause.
_DETAIL = re.compile(r"( for \d+(\.\d+)?s$|:.*$)")


def reason_key(reason: str) -> str:
    """A refusal's reason without its particulars: the cause it names."""
    if reason.startswith("request of ~"):  # "request of ~N tokens > tokens_per_minute L"
        return "larger than a token limit"
    return _DETAIL.sub("", reason)


class SkipTally:
    """Requests each provider's gates turned away, by reason."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[str, set[int]]] = {}
        self._unnamed: dict[str, dict[str, int]] = {}

    def watch(self, router: ResilientRouter) -> None:
        """Wrap every gate of ``router``'s providers (a reload builds new gates, unwatched:
        the simulator never reloads)."""
        for name, provider in router.providers.items():
            provider.gates = tuple(
                (_WatchedCall if g.holds_call else _Watched)(g, name, self) for g in provider.gates
            )

    def note(self, provider: str, reason: str) -> None:
        key = reason_key(reason)
        request = current_request.get()
        if request is None:  # outside a simulated request: count every refusal
            counts = self._unnamed.setdefault(provider, {})
            counts[key] = counts.get(key, 0) + 1
        else:  # a request refused again after a wait is one request skipped
            self._seen.setdefault(provider, {}).setdefault(key, set()).add(request)

    def counts(self, provider: str) -> dict[str, int]:
        """Requests skipped at ``provider``, by reason, most first."""
        counts = {k: len(v) for k, v in self._seen.get(provider, {}).items()}
        for key, n in self._unnamed.get(provider, {}).items():
            counts[key] = counts.get(key, 0) + n
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class _Watched(Gate):
    """A gate that notes its refusals; otherwise it is the gate it wraps."""

    __slots__ = ("gate", "provider", "tally")

    def __init__(self, gate: Gate, provider: str, tally: SkipTally) -> None:
        self.gate, self.provider, self.tally = gate, provider, tally

    def plan(self, lease: Lease) -> AdmitOp | Refusal | None:
        planned = self.gate.plan(lease)
        if type(planned) is Refusal:
            self.tally.note(self.provider, planned.reason)
        return planned

    def took(self, lease: Lease, answer: Any) -> Refusal | None:
        refusal = self.gate.took(lease, answer)
        if refusal is not None:
            self.tally.note(self.provider, refusal.reason)
        return refusal

    def release(self, lease: Lease) -> SettleOp | None:
        return self.gate.release(lease)

    def released(self, lease: Lease, answer: Any) -> None:
        self.gate.released(lease, answer)


class _WatchedCall(_Watched):
    """A watched gate that holds its resource for as long as the call runs."""

    __slots__ = ()
    holds_call: ClassVar[bool] = True
