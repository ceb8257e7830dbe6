"""How recon values read in the console: money as `1,409.39 USD` (the currency's minor units: `1,500 JPY`),
timestamps with seconds and time zone, and entries named by their key and amount. Every recon admin page
formats through these helpers."""

import datetime as dt
from decimal import Decimal

from django.utils import timezone

from recon.currencies import minor_units


def money(amount, currency: str | None) -> str:
    """`1,409.39 USD`: grouped thousands, the currency's minor units (more decimals only when the amount has
    them: `0.1234 USD`), the code after the amount. `-` for None."""
    if amount is None:
        return "-"
    value = Decimal(amount)
    places = minor_units(currency or "")
    quantum = Decimal(1).scaleb(-places)
    shown = value.quantize(quantum) if value == value.quantize(quantum) else value.normalize()
    if shown.as_tuple().exponent > 0:  # normalize() of a round amount: 1E+3
        shown = shown.quantize(Decimal(1))
    decimals = max(places, -shown.as_tuple().exponent)
    text = f"{shown:,.{decimals}f}"
    return f"{text} {currency}" if currency else text


def when(value: dt.datetime | None) -> str:
    """`2026-11-01 12:00:05 UTC` in the console's time zone; `-` for None."""
    if value is None:
        return "-"
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


def age(value: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """How long ago: `3d 4h`, `2h 5m`, `40s`."""
    if value is None:
        return "-"
    seconds = max(0, int(((now or timezone.now()) - value).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"


def plural(n: int, one: str, many: str | None = None) -> str:
    """`1 entry`, `2 entries`."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def entry_label(*, key: str | None, amount, currency: str, side: str | None = None) -> str:
    """An entry as a person reads it: `ord-2001 · 240.00 USD` (with the side when given)."""
    parts = [key or "(no key)", money(amount, currency)]
    if side:
        parts.append(side)
    return " · ".join(parts)
