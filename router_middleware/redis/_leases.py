"""This replica's side of the concurrency leases: which it holds, their renewal, and the
release notices of the other replicas.

A lease is a member of a provider's sorted set on Redis (``_scripts``), named by
:class:`Leases` so that only this replica renews or releases it. Invariants:

* a held lease is renewed every third of ``lease_seconds`` by one thread, which ends when
  no lease is held (and starts again with the next), so a lease expires only once its
  replica has stopped (died, frozen, closed);
* a lease is released at most once: :meth:`Leases.take` hands its name out once;
* a notice of a release made by *another* replica wakes this one's waiters; its own
  releases woke them already.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Leases", "ReleaseNotices"]

logger = logging.getLogger("router_middleware")


class Leases:
    """The leases this replica holds, by slots key, renewed while held."""

    __slots__ = ("_held", "_ids", "_lock", "_renew", "_renewer", "_stop", "replica", "seconds")

    def __init__(self, seconds: float, renew: Callable[[str, Sequence[str]], Any]) -> None:
        self.seconds = seconds
        # Names this replica's leases apart from every other's, restarts included.
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._ids = itertools.count(1)
        self._renew = renew
        self._held: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()

    def new(self) -> str:
        """A name for a lease not taken yet."""
        return f"{self.replica}:{next(self._ids)}"

    def hold(self, key: str, member: str) -> None:
        """``member`` was granted on ``key``: renew it until it is taken back."""
        with self._lock:
            self._held.setdefault(key, []).append(member)
            renewer = self._renewer
            if renewer is None or not renewer.is_alive():
                renewer = self._renewer = threading.Thread(
                    target=self._renew_loop, name="router-middleware-lease-renewal", daemon=True
                )
            else:
                renewer = None
        if renewer is not None:
            renewer.start()

    def take(self, key: str) -> str | None:
        """One lease held on ``key``, no longer renewed (``None``: none is held here)."""
        with self._lock:
            held = self._held.get(key)
            if not held:
                return None
            member = held.pop()
            if not held:
                del self._held[key]
            return member

    def holds(self, key: str) -> bool:
        return bool(self._held.get(key))

    def count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._held.values())

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            with self._lock:
                held = {k: list(v) for k, v in self._held.items() if v}
                if not held:
                    self._renewer = None
                    return
            for key, members in held.items():
                try:
                    self._renew(key, members)
                except Exception as exc:
                    logger.warning("could not renew %d concurrency lease(s): %s", len(members), exc)

    def close(self) -> None:
        """Stop renewing (the leases still held expire)."""
        self._stop.set()
        renewer = self._renewer
        if renewer is not None:
            renewer.join(timeout=2)


class ReleaseNotices:
    """Other replicas' slot releases, heard on one pub/sub channel by a thread started at
    the first wait, each told to the listeners as the provider's name."""

    __slots__ = ("_client", "_closed", "_listeners", "_subscriber", "channel", "replica")

    def __init__(self, client: Any, channel: str, replica: str) -> None:
        self._client = client
        self.channel = channel
        self.replica = replica
        self._listeners: tuple[Callable[[str], None], ...] = ()
        self._subscriber: Any = None
        self._closed = False

    def notice(self, provider: str) -> str:
        """What a release of this replica publishes."""
        return f"{self.replica}|{provider}"

    def add_listener(self, listener: Callable[[str], None]) -> None:
        self._listeners = (*self._listeners, listener)

    def listen(self) -> None:
        """A request waits for a slot held elsewhere: hear releases from now on."""
        if self._subscriber is not None or not self._listeners or self._closed:
            return
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(**{self.channel: self._heard})
        self._subscriber = pubsub.run_in_thread(
            sleep_time=1.0, daemon=True, exception_handler=self._lost
        )

    @property
    def listening(self) -> bool:
        return self._subscriber is not None

    def _heard(self, message: dict[str, Any]) -> None:
        replica, _, provider = message["data"].decode().partition("|")
        if replica == self.replica:
            return  # this replica's own release woke its waiters already
        for listener in self._listeners:
            try:
                listener(provider)
            except Exception:
                logger.exception("release listener %r failed", listener)

    def _lost(self, exc: BaseException, pubsub: Any, thread: Any) -> None:
        # Waiters still wake at their computed re-check; subscribe again at the next wait.
        logger.warning("lost the slot-release channel: %s", exc)
        thread.stop()
        self._subscriber = None

    def close(self) -> None:
        self._closed = True
        subscriber, self._subscriber = self._subscriber, None
        if subscriber is not None:
            subscriber.stop()
            subscriber.join(timeout=2)
