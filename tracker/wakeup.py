"""Waking consumers: PostgreSQL NOTIFY inside the producing transaction (delivered on commit, never before),
LISTEN on a dedicated autocommit connection."""

import select

import psycopg
from django.conf import settings
from django.db import connections

TASKS_CHANNEL = "tracker_wakeup"


def notify(channel: str = TASKS_CHANNEL, payload: str = "", using: str = "default") -> None:
    """Queues a notification in the current transaction; PostgreSQL delivers it at commit."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [channel, payload])


class Listener:
    """A LISTEN connection of its own (open it after fork)."""

    def __init__(self, *channels: str, using: str = "default"):
        db = settings.DATABASES[using]
        params = {"dbname": db["NAME"], "user": db.get("USER") or None, "password": db.get("PASSWORD") or None,
                  "host": db.get("HOST") or None, "port": db.get("PORT") or None}
        self.conn = psycopg.connect(**{k: v for k, v in params.items() if v}, autocommit=True)
        for channel in channels or (TASKS_CHANNEL,):
            self.conn.execute(f'LISTEN "{channel}"')

    def wait(self, timeout: float) -> list[tuple[str, str]]:
        """Blocks up to `timeout` seconds for notifications; returns (channel, payload) pairs."""
        got = []
        for note in self.conn.notifies(timeout=timeout, stop_after=1):
            got.append((note.channel, note.payload))
        # Collect whatever else has already arrived without blocking.
        if got and select.select([self.conn.fileno()], [], [], 0)[0]:
            for note in self.conn.notifies(timeout=0):
                got.append((note.channel, note.payload))
        return got

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
