"""Bank statements: a parser per format turns a file into normalised statement lines (`Line`), one path for all.

    fmt = detect_format(head_bytes)            # "camt053" | "mt940" | "ofx" | "bai2" | "csv" | None
    for item in parse(fmt, binary_stream):     # Line ... Statement (after its lines) ...
        ...

Parsers stream (bounded memory whatever the file's size) and raise `StatementParseError` naming the format and
where parsing stopped. Callers that must not write a broken file parse it through once before writing
(`recon.ingest` does). Directions follow API.md "File import": `IN` is money coming into the account."""

from recon.statements.base import IN, OUT, TEXT_FIELDS, Line, Statement, StatementParseError, text_fields
from recon.statements.detect import FORMATS, detect_format, parse

__all__ = [
    "FORMATS",
    "IN",
    "OUT",
    "TEXT_FIELDS",
    "Line",
    "Statement",
    "StatementParseError",
    "detect_format",
    "parse",
    "text_fields",
]
