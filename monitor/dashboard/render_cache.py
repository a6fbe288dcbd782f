"""Build once, serve many: a run's figures are built once per data version and view options,
and shared by every viewer of the dashboard process.

Ten people opening the same run during an incident must cost one build, not ten: the key is
what the figures are made of (the run's content version, its alerts, the view options), so
a viewer whose run has not changed gets the figures another viewer already paid for. Bounded:
least recently used entries go first once `max_entries` is reached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

V = TypeVar("V")

DEFAULT_MAX_ENTRIES = 48  # ~4 figures of ≤ 4,000 points per trace each: a few MB per entry


class RenderCache(Generic[V]):
    """A thread-safe LRU whose concurrent misses on one key build the value once."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._done: OrderedDict[Hashable, V] = OrderedDict()
        self._building: dict[Hashable, Future[V]] = {}
        self._lock = threading.Lock()
        self.builds = 0  # how many values were built (hits = lookups - builds)
        self.lookups = 0

    def get(self, key: Hashable, build: Callable[[], V]) -> V:
        with self._lock:
            self.lookups += 1
            if key in self._done:
                self._done.move_to_end(key)
                return self._done[key]
            future = self._building.get(key)
            owner = future is None
            if owner:
                future = self._building[key] = Future()
        assert future is not None
        if not owner:
            return future.result()  # another viewer is building exactly this: wait for it
        try:
            value = build()
        except BaseException as e:
            with self._lock:
                del self._building[key]
            future.set_exception(e)
            raise
        with self._lock:
            self.builds += 1
            del self._building[key]
            self._done[key] = value
            while len(self._done) > self.max_entries:
                self._done.popitem(last=False)
        future.set_result(value)
        return value

    def __len__(self) -> int:
        with self._lock:
            return len(self._done)
