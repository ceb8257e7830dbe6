"""Text that PostgreSQL cannot store, found before it reaches the database (issue 17, item 3): NUL characters
(`text` and `jsonb` refuse `\\u0000`) and lone UTF-16 surrogates (not encodable as UTF-8). Also the depth of
parsed JSON, walked without recursion so any depth is safe to check."""

import re

_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
MAX_JSON_DEPTH = 64


def text_problem(text: str) -> str | None:
    """A clear message when `text` holds a character that cannot be stored, else None."""
    found = _BAD_TEXT.search(text)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return f"contains a NUL character (U+0000) at position {found.start()}"
    return f"contains a lone surrogate (U+{ord(char):04X}) at position {found.start()}; send valid Unicode text"


def json_problem(value, *, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """The first problem of parsed JSON `value` (a string, key or value that cannot be stored, or nesting deeper
    than `max_depth`), with its path, else None."""
    stack = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if (problem := text_problem(item)) is not None:
                return f"{path or 'value'} {problem}"
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > max_depth:
            return f"JSON nested deeper than {max_depth} levels"
        if isinstance(item, dict):
            for key, child in item.items():
                if (problem := text_problem(key)) is not None:
                    return f"key {key.encode('unicode_escape').decode()[:80]!r} {problem}"
                stack.append((child, f"{path}.{key}" if path else key, depth + 1))
        else:
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
    return None
