"""A small synchronous event bus. Subscribers are called in the emitting thread, in order; a subscriber
that raises is logged and dropped from that event only (a broken GUI must not fail a training run)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

from runtime.domain.events import Event

log = logging.getLogger(__name__)


class EventBus:
    def __init__(self) -> None:
        self._subs: list[Callable[[Event], None]] = []
        self._lock = threading.Lock()
        self._seq = 0

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        with self._lock:
            self._subs.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subs:
                    self._subs.remove(callback)

        return unsubscribe

    def emit(self, event: Event) -> Event:
        with self._lock:
            self._seq += 1
            event = replace(event, seq=self._seq)
            subs = list(self._subs)
        for cb in subs:
            try:
                cb(event)
            except Exception:  # noqa: BLE001
                log.exception("event subscriber failed")
        return event
