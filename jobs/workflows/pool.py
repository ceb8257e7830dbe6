"""The step threads of one consumer (docs/workflows.md, "How steps run"): the step functions of a claimed batch run
at the same time, one thread each, so no claimed step waits behind another.

Threads start on demand (up to `size`) and keep their database connection (Django gives each thread its own)
for the consumer's slice: `close()` at the slice's end stops them, each closing its connection. A thread idle for
`idle_seconds` stops as well (a worker used without `close()`, as tests do, leaves no connection behind)."""

import threading
from collections import deque
from concurrent.futures import Future

from django.db import connection


class StepPool:
    def __init__(self, size: int, *, idle_seconds: float = 30.0, name: str = "steps"):
        self.size, self.idle_seconds, self.name = max(1, int(size)), idle_seconds, name
        self._cond = threading.Condition()
        self._items: deque = deque()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, function, *args) -> Future:
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the step pool is closed")
            self._items.append((future, function, args))
            if self._idle < len(self._items) and len(self._threads) < self.size:
                thread = threading.Thread(target=self._loop, daemon=True, name=f"{self.name}-{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
            self._cond.notify()
        return future

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    self._idle += 1
                    self._cond.wait_for(lambda: self._items or self._closed, timeout=self.idle_seconds)
                    self._idle -= 1
                    if not self._items:  # closed, or idle too long
                        self._threads.remove(threading.current_thread())
                        return
                    future, function, args = self._items.popleft()
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(function(*args))
                    except BaseException as exc:  # noqa: BLE001  (handed to the waiting consumer)
                        future.set_exception(exc)
        finally:
            connection.close()

    def close(self, timeout: float = 10.0) -> None:
        """Stops the threads once the work handed to them is done; each closes its database connection."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=timeout)
