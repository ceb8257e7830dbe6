"""Which format a file is, from its content (never its name), and the one entry point to the parsers."""

import re
from collections.abc import Iterator

from recon.statements import bai2, camt, mt940, ofx
from recon.statements.base import Line, Statement

PARSERS = {"camt053": camt.parse, "mt940": mt940.parse, "ofx": ofx.parse, "bai2": bai2.parse}
FORMATS = ("csv", *PARSERS)
CSV_HEADER = re.compile(r"^[^\r\n]*[,;\t|][^\r\n]*$")


def detect_format(head: bytes) -> str | None:
    """The format of a file from its first bytes (a few KiB), or None when it is none of FORMATS."""
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if text.startswith("<") or text.startswith("OFXHEADER"):
        if "urn:iso:std:iso:20022:tech:xsd:camt.05" in text:
            return "camt053"
        if text.startswith("OFXHEADER") or re.search(r"<\?OFX\b|<OFX>", text, re.IGNORECASE):
            return "ofx"
        return None
    if re.match(r"^01,[^,\r\n]*,", text):
        return "bai2"
    if text.startswith(("{1:", ":20:")) or re.search(r"^:20:.*?^:(25|28C):", text, re.DOTALL | re.MULTILINE):
        return "mt940"
    first = text.splitlines()[0] if text else ""
    if CSV_HEADER.match(first) and "\x00" not in first:
        return "csv"
    return None


def parse(fmt: str, stream) -> Iterator[Line | Statement]:
    """Statement lines and statements of a binary stream in a statement format (not CSV)."""
    return PARSERS[fmt](stream)
