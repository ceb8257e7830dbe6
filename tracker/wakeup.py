"""Waking consumers: PostgreSQL NOTIFY inside the producing transaction (delivered on commit, never before),
LISTEN on a dedicated autocommit connection that reconnects by itself after a database restart."""

import logging
import select
import time

import psycopg
from django.conf import settings
from django.db import connections

from tracker.errors import brief

log = logging.getLogger(__name__)

TASKS_CHANNEL = "tracker_wakeup"


def notify(channel: str = TASKS_CHANNEL, payload: str = "", using: str = "default") -> None:
    """Queues a notification in the current transaction; PostgreSQL delivers it at commit."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [channel, payload])


class Listener:
    """A LISTEN connection of its own (open it after fork).

    When the connection breaks (the database restarted), `wait` closes it, and the next `wait` connects and
    LISTENs again: it never raises. Notifications sent while it was disconnected are lost, so a caller re-reads
    what it waits for after each `wait` (`reconnects` counts the new connections)."""

    def __init__(self, *channels: str, using: str = "default"):
        self.channels = channels or (TASKS_CHANNEL,)
        self.using = using
        self.conn = None
        self.reconnects = 0
        self._connect()

    def _connect(self) -> None:
        db = settings.DATABASES[self.using]
        params = {
            "dbname": db["NAME"],
            "user": db.get("USER") or None,
            "password": db.get("PASSWORD") or None,
            "host": db.get("HOST") or None,
            "port": db.get("PORT") or None,
        }
        conn = psycopg.connect(**{k: v for k, v in params.items() if v}, autocommit=True, connect_timeout=5)
        try:
            for channel in self.channels:
                conn.execute(f'LISTEN "{channel}"')
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def wait(self, timeout: float) -> list[tuple[str, str]]:
        """Blocks up to `timeout` seconds for notifications; returns (channel, payload) pairs."""
        if self.conn is None:
            try:
                self._connect()
            except psycopg.Error:
                time.sleep(timeout)
                return []
            self.reconnects += 1
            log.info("LISTEN %s: reconnected", ", ".join(self.channels))
            return []  # what was notified meanwhile is lost: the caller looks again
        got = []
        try:
            for note in self.conn.notifies(timeout=timeout, stop_after=1):
                got.append((note.channel, note.payload))
            # Collect whatever else has already arrived without blocking.
            if got and select.select([self.conn.fileno()], [], [], 0)[0]:
                for note in self.conn.notifies(timeout=0):
                    got.append((note.channel, note.payload))
        except psycopg.Error as exc:
            log.warning("LISTEN %s: connection lost (%s)", ", ".join(self.channels), brief(exc))
            self.close()
        return got

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
            self.conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
