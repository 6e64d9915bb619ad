"""The strategies that read live state: ``weighted``, ``least_busy``, ``lowest_latency``
and ``usage_based``.

Each reads its candidates through a :class:`~._candidate.CandidateReader` (the
documented :class:`~._candidate.Candidate` attributes only), in O(1) per candidate, and
yields them lazily: O(n) for the first, O(log n) for each fallback after it. Ties go by
``priority`` (lower first), then least recently selected, then the order given.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence

from cachetools import LRUCache

from ._candidate import C, CandidateReader, ranked

__all__ = ["LeastBusy", "LowestLatency", "UsageBased", "Weighted"]


def _by_score(candidates: Sequence[C], scores: Sequence[float]) -> Iterator[C]:
    """Lowest score first; ties by priority, then least recently selected, then position."""
    keys = [
        (score, c.priority, c.last_selected, i)
        for i, (c, score) in enumerate(zip(candidates, scores, strict=True))
    ]
    return ranked(candidates, keys)


class _Reading:
    """A strategy that only reads its candidates: its reader is all its state."""

    __slots__ = ("_read",)

    name: str

    def __init__(self) -> None:
        self._read = CandidateReader()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Weighted:
    """Smooth weighted round robin (nginx's) by each candidate's ``weight``.

    Per model, each candidate keeps a current value. On each request every candidate's
    value grows by its weight, the largest goes first (the first given on a tie) and
    gives back the sum of the weights. Over any ``sum(weights)`` consecutive requests each
    candidate leads exactly ``weight`` times (integer weights), interleaved rather than in
    runs: weights 5, 1, 1 give ``a a b a c a a``. The fallbacks follow by current value,
    highest first (who is owed most). Each order read is one step (a request reads one,
    and one more after each wait for capacity), whether or not its first candidate then
    admits it; one lock guards the values, so concurrent requests each take one step of
    the same sequence.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class P:
        ...     name: str
        ...     weight: float
        ...     priority: float = 1
        ...     last_selected: int = 0
        >>> ps = [P("a", 5), P("b", 1), P("c", 1)]
        >>> s = Weighted()
        >>> "".join(next(s.order(ps, "m")).name for _ in range(7))
        'aabacaa'
    """

    __slots__ = ("_current", "_lock", "_read")

    name: str = "weighted"

    def __init__(self) -> None:
        self._current: LRUCache[str | None, dict[str, float]] = LRUCache(maxsize=256)
        self._lock = threading.Lock()
        self._read = CandidateReader()

    def order(self, candidates: Sequence[C], model: str | None) -> Iterator[C]:
        if not candidates:
            return
        weights = [self._read(c).weight for c in candidates]
        names = [c.name for c in candidates]
        with self._lock:
            current = self._current.get(model)
            if current is None or len(current) > 2 * len(names) + 8:
                # New, or holding many providers no longer here (reloads): keep these.
                current = {n: current.get(n, 0.0) for n in names} if current else {}
                self._current[model] = current
            best, best_value, total = 0, -math.inf, 0.0
            values = []
            for i, (name, weight) in enumerate(zip(names, weights, strict=True)):
                value = current.get(name, 0.0) + weight
                current[name] = value
                values.append(value)
                total += weight
                if value > best_value:
                    best, best_value = i, value
            current[names[best]] = values[best] = best_value - total
        yield candidates[best]
        yield from ranked(candidates, [(-v, i) for i, v in enumerate(values) if i != best])

    def __repr__(self) -> str:
        return "Weighted()"


class LeastBusy(_Reading):
    """Fewest calls in flight relative to ``max_concurrent`` first.

    A candidate's load is ``in_flight / max_concurrent``. One without a cap counts as
    capped at the largest cap among the request's candidates (at 1 when none has a cap,
    which makes the order plain in-flight counts): unlimited is at least as roomy as the
    roomiest capped one, but not free, so it does not take every request. Full candidates
    (load >= 1) come last; their gate would refuse them anyway.
    """

    __slots__ = ()

    name: str = "least_busy"

    def order(self, candidates: Sequence[C], model: str | None) -> Iterator[C]:
        views = self._read.all(candidates)
        caps = [v.max_concurrent for v in views]
        roomiest = max((cap for cap in caps if cap is not None), default=1)
        loads = [v.in_flight / (cap or roomiest) for v, cap in zip(views, caps, strict=True)]
        yield from _by_score(candidates, loads)


class LowestLatency:
    """Lowest recent latency first, with a little exploration.

    The figure is :attr:`~._candidate.Candidate.latency` (an EWMA of successful calls) or,
    for streams, :attr:`~._candidate.Candidate.time_to_first_token`. The router's
    pipeline calls ``order(candidates, model)`` and does not say whether the request
    streams, so by default (``stream=None``) the figure follows the traffic: time to
    first token when some candidate has streamed and every candidate with a latency has
    one too (a router that streams), else latency (one figure for all candidates, so
    they compare). A caller that knows passes ``stream=``.

    Exploration: a candidate never selected, or not selected in the last
    ``explore_after`` picks among these candidates, goes first (the least recently
    selected such one, one per request), so a provider that recovered is measured
    again; its estimate is then replaced by the new samples, not blended with the old
    ones. Candidates with no figure (selected recently, nothing measured: they failed)
    come after those with one. Deterministic: no randomness is involved.
    """

    __slots__ = ("_read", "explore_after")

    name: str = "lowest_latency"

    def __init__(self, *, explore_after: int = 50) -> None:
        if explore_after < 1:
            raise ValueError(f"explore_after must be >= 1, not {explore_after!r}")
        self.explore_after = explore_after
        self._read = CandidateReader(stale_after=explore_after)

    def order(
        self, candidates: Sequence[C], model: str | None, *, stream: bool | None = None
    ) -> Iterator[C]:
        if not candidates:
            return
        views = self._read.all(candidates)
        latency = [v.latency for v in views]
        estimates = latency
        if stream is not False:
            ttft = [v.time_to_first_token for v in views]
            if stream is None:
                pairs = zip(latency, ttft, strict=True)
                stream = any(t is not None for t in ttft) and all(
                    t is not None for lat, t in pairs if lat is not None
                )
            if stream:
                estimates = ttft
        latest = max(c.last_selected for c in candidates)
        due = [
            (c.last_selected, i)
            for i, c in enumerate(candidates)
            if not c.last_selected or latest - c.last_selected >= self.explore_after
        ]
        first = min(due)[1] if due else -1
        if first >= 0:
            yield candidates[first]
        keys = [
            (e is None, e or 0.0, c.priority, c.last_selected, i)
            for i, (c, e) in enumerate(zip(candidates, estimates, strict=True))
            if i != first
        ]
        yield from ranked(candidates, keys)

    def __repr__(self) -> str:
        return f"LowestLatency(explore_after={self.explore_after})"


class UsageBased(_Reading):
    """Most remaining headroom first.

    The headroom is :attr:`~._candidate.Candidate.token_headroom` (LLM tokens the
    provider's token limits would admit now) when any candidate has token limits; the
    router has none yet, so today it is
    :attr:`~._candidate.Candidate.request_headroom`, the requests its request bucket
    would admit now. A candidate without such a limit has unbounded headroom and goes
    first. Headroom is absolute, not a share, so a provider with a larger limit takes
    more of the traffic.
    """

    __slots__ = ()

    name: str = "usage_based"

    def order(self, candidates: Sequence[C], model: str | None) -> Iterator[C]:
        views = self._read.all(candidates)
        headroom = [v.token_headroom for v in views]
        if all(h is None for h in headroom):
            headroom = [v.request_headroom for v in views]
        yield from _by_score(candidates, [-math.inf if h is None else -h for h in headroom])
