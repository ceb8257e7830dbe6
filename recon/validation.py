"""Checks of staging-entry input shared by every door (API, CSV import, console, commands): what can be stored
and matched. Limits are documented in docs/operations.md, "Limits"."""

import json

from django.conf import settings

from config.textcheck import json_problem

# A transaction's logical id is "<account uuid>:<match-key value>" in a varchar(255): 36 + 1 + 218. A match-key
# value (e.g. an order id) longer than this is refused at the door rather than failing in the engine.
MATCH_VALUE_MAX_CHARS = 200
DEFAULT_MATCH_KEY = "order_id"


def metadata_max_bytes() -> int:
    return int(getattr(settings, "METADATA_MAX_BYTES", 64 * 1024))


def match_value_problem(key: str, value) -> str | None:
    """Why `value` cannot serve as the match-key value of `key` (an object or list, or too long), else None."""
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return f"{key} must be a string or a number, not a JSON {'object' if isinstance(value, dict) else 'array'}"
    if len(str(value)) > MATCH_VALUE_MAX_CHARS:
        return f"{key} is longer than {MATCH_VALUE_MAX_CHARS} characters (the limit of a match-key value)"
    return None


def metadata_problems(metadata: dict, *, match_keys=(DEFAULT_MATCH_KEY,)) -> list[str]:
    """Problems of a staging entry's metadata: text that cannot be stored, nesting too deep, a JSON text above
    settings.METADATA_MAX_BYTES, a value of a match key that is not a scalar or is too long."""
    if (problem := json_problem(metadata)) is not None:
        return [problem]
    problems = []
    size = len(json.dumps(metadata, default=str, ensure_ascii=False).encode())
    if size > metadata_max_bytes():
        problems.append(f"metadata is {size} bytes of JSON; at most {metadata_max_bytes()} are allowed")
    for key in dict.fromkeys(match_keys):
        if (problem := match_value_problem(key, metadata.get(key))) is not None:
            problems.append(problem)
    return problems


def match_keys_of(account) -> list[str]:
    """`order_id` and the match keys of the rules the account takes part in."""
    from django.db.models import Q

    from recon.models import ReconRule

    keys = ReconRule.objects.filter(Q(account_one=account) | Q(account_two=account)).values_list("match_key",
                                                                                                  flat=True)
    return [DEFAULT_MATCH_KEY, *keys]
