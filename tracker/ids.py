"""Primary keys of the hot tables: time-ordered UUIDs (version 7, RFC 9562)."""

import random
import time
import uuid

RUN_MAX = 1 << 24
_VERSION_AND_VARIANT = 0x7 << 76 | 0x2 << 62
_new, _set, _UUID, _UNKNOWN = object.__new__, object.__setattr__, uuid.UUID, uuid.SafeUUID.unknown


def uuid7() -> uuid.UUID:
    """A new time-ordered UUID: 48-bit Unix milliseconds, the version, 74 random bits.

    Time-ordered keys land at the right edge of btrees: a new row's key touches the same few hot leaf pages as
    the rows inserted just before it, instead of a random leaf of the whole primary-key (and foreign-key)
    index, so inserts dirty fewer pages and write fewer full-page images to the WAL. Used as the `default=` of
    every UUID primary key. Built without `UUID.__init__` (~2.5 µs here against ~10 µs for the uuid6 package
    and ~7 µs for uuid4, which reads os.urandom); the random bits come from `random`, which Python reseeds in
    every forked worker: ids need to be unique, not unguessable (access control never relies on them)."""
    value = (time.time_ns() // 1_000_000) << 80 | random.getrandbits(12) << 64 | random.getrandbits(62)
    u = _new(_UUID)
    _set(u, "int", value | _VERSION_AND_VARIANT)
    _set(u, "is_safe", _UNKNOWN)
    return u


def uuid7_texts(n: int) -> list[str]:
    """`n` (< 2**24) new time-ordered UUIDs as canonical text, for bulk writes: one `uuid7()`'s time and random
    bits with its last 24 bits replaced by a counter 0..n-1 (RFC 9562's dedicated-counter method), so the run
    sorts in order and 50 random bits still tell it from any other run of the same millisecond (~0.5 µs each)."""
    if not 0 <= n < RUN_MAX:
        raise ValueError(f"n must be in [0, {RUN_MAX})")
    head = str(uuid7())[:-6]
    return [f"{head}{i:06x}" for i in range(n)]
