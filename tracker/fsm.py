"""The state machines' declarations read as data: each django-fsm transition of a model's status field as its
sources and target, so the set-based statements are written from the declarations (their `WHERE status IN (...)`
and `SET status = ...`) instead of repeating the states by hand (docs/decisions/0010-fsm-declarations-are-truth.md)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Move:
    """One declared transition: its name (the model's method), the states it leaves and the state it enters."""

    name: str
    sources: tuple[str, ...]
    target: str

    @property
    def sources_sql(self) -> str:
        """The sources as SQL literals (`'PENDING', 'RETRY'`), for `status IN (...)`."""
        return literals(self.sources)

    @property
    def target_sql(self) -> str:
        """The target as an SQL literal."""
        return literals([self.target])


def moves(model, field: str = "status") -> dict[str, Move]:
    """Every transition declared on `model`'s FSM field, by name. A transition declared with a wildcard source
    (`*`, `+`) or a computed target is refused: a set-based statement could not be written from it."""
    found: dict[str, tuple[list[str], str]] = {}
    for transition in model._meta.get_field(field).get_all_transitions(model):
        if not isinstance(transition.target, str) or transition.source in ("*", "+"):
            raise ValueError(f"{model.__name__}.{transition.name}: only fixed sources and targets are supported")
        sources, target = found.setdefault(transition.name, ([], transition.target))
        assert target == transition.target, transition.name
        sources.append(str(transition.source))
    return {name: Move(name, tuple(sorted(sources)), str(target)) for name, (sources, target) in found.items()}


def literals(values) -> str:
    """Status values as SQL string literals, comma-separated. The values are the code's own choices (upper-case
    names), never input: anything else is refused."""
    values = [str(v) for v in values]
    for value in values:
        if not value.replace("_", "").isalnum():
            raise ValueError(f"not a state name: {value!r}")
    return ", ".join(f"'{v}'" for v in values)
