"""Primary keys of the hot tables."""

import uuid

import uuid6


def uuid7() -> uuid.UUID:
    """A new time-ordered UUID (version 7: 48-bit Unix milliseconds, then random bits).

    Time-ordered keys land at the right edge of btrees: a new row's key touches the same few hot leaf pages as
    the rows inserted just before it, instead of a random leaf of the whole primary-key (and foreign-key)
    index, so inserts dirty fewer pages and write fewer full-page images to the WAL. Used as the `default=` of
    every UUID primary key. Returned as a plain `uuid.UUID` (uuid6 returns its own subclass)."""
    return uuid.UUID(int=uuid6.uuid7().int)
