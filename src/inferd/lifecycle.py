"""The process's stop: SIGTERM starts a drain that every part sees.

When Kubernetes (or ``docker stop``) ends a pod it removes the pod from its Service and sends
SIGTERM at about the same time; the manifests' ``preStop`` sleep lets the removal spread first.
From SIGTERM on:

- ``/ready`` answers 503 ``draining``, so nothing routes new work here;
- the HTTP server stops accepting connections and gives the requests and streams in flight up
  to ``shutdown_grace_seconds`` to finish (``inferd.cli``);
- the job workers take no new job, let the running ones finish within the same grace, and hand
  back at once what is still running at its end (``inferd.jobs.worker``).

One ``Drain`` per process: the command that runs the server builds it and hands it to the
server that catches the signal and to the services that obey it (``create_app``).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Drain:
    """Whether this process is stopping, and until when its work may run."""

    def __init__(self) -> None:
        self.started: float | None = None  # time.monotonic() of the signal
        self.grace = 0.0
        self._listeners: list[Callable[[], None]] = []

    @property
    def active(self) -> bool:
        return self.started is not None

    def begin(self, grace: float) -> None:
        """Start draining (idempotent: a second signal does not extend the grace)."""
        if self.started is not None:
            return
        self.started = time.monotonic()
        self.grace = grace
        for listener in list(self._listeners):
            listener()

    def remaining(self) -> float:
        """Seconds left of the grace (the whole grace before the drain starts)."""
        if self.started is None:
            return self.grace
        return max(0.0, self.started + self.grace - time.monotonic())

    def on_begin(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` when the drain starts (at once if it has); returns the undo."""
        if self.started is not None:
            listener()
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def reset(self) -> None:
        """Back to serving (a process that runs an app again, and tests)."""
        self.started = None
        self.grace = 0.0
