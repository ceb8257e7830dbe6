"""The task state machine has one truth: the transitions `ProcessTracker` declares. Every set-based statement that
changes a task's status (tracker.queries) moves it only along declared transitions, every declared transition is
made somewhere, and no other tracker code writes a status by hand. No database needed."""

import ast
import itertools
import re
from pathlib import Path

import pytest

from jobs.workflows import queries as workflow_queries
from tracker import fsm, queries, services
from tracker.models import DUE_STATUSES, FINISHED_STATUSES, ProcessTracker, TaskStatus

ROOT = Path(__file__).resolve().parents[2]


def declared_pairs(moves) -> set[tuple[str, str]]:
    return {(source, move.target) for move in moves for source in move.sources}


def statement_pairs(sql: str, column: str = "status") -> set[tuple[str, str]]:
    """The (from, to) pairs a task (or step) UPDATE can make, read from its text: every state it filters on
    (`status IN (...)`, the states of its locking read included) times every literal its `SET status = ...`
    writes."""
    sources = {s for group in re.findall(rf"\b{column} IN \(([^)]*)\)", sql) for s in re.findall(r"'(\w+)'", group)}
    match = re.search(rf"\bSET {column} = (CASE .*? END|'\w+')", sql, re.S)
    assert match, f"no SET {column}"
    targets = set(re.findall(r"'(\w+)'", match.group(1)))
    return set(itertools.product(sources, targets))


def orm_update_of(node: ast.AST, field: str) -> bool:
    """`node` is a `<...>.objects...update(<field>=...)` call (a queryset's, not a progress bar's)."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update"):
        return False
    if not any(k.arg == field for k in node.keywords):
        return False
    chain = node.func.value
    while isinstance(chain, (ast.Call, ast.Attribute)):
        if isinstance(chain, ast.Attribute) and chain.attr in ("objects", "filter", "exclude", "select_for_update"):
            return True
        chain = chain.func if isinstance(chain, ast.Call) else chain.value
    return False


def test_the_declarations_are_read_as_data():
    moves = fsm.moves(ProcessTracker)
    assert moves["start"] == fsm.Move("start", (TaskStatus.PENDING, TaskStatus.RETRY), TaskStatus.PROCESSING)
    assert moves["cancel"].sources_sql == "'PENDING', 'RETRY'" and moves["cancel"].target_sql == "'CANCELLED'"
    with pytest.raises(ValueError):
        fsm.literals(["PENDING'; DROP TABLE process_tracker; --"])


@pytest.mark.parametrize("name", sorted(queries.STATEMENT_MOVES))
def test_each_statement_makes_exactly_its_declared_transitions(name):
    sql = getattr(queries, name)
    assert statement_pairs(sql) == declared_pairs(queries.STATEMENT_MOVES[name]), sql


def test_every_status_changing_statement_says_which_transitions_it_makes():
    changing = {
        name
        for name, value in vars(queries).items()
        if isinstance(value, str)
        and name.isupper()
        and not name.startswith("_")
        and re.search(r"\bSET status\b", value)
    }
    assert changing == set(queries.STATEMENT_MOVES)


def test_every_declared_transition_is_made():
    """By a set-based statement, or (an operator's action on one task) by calling the transition method."""
    made = {move.name for moves in queries.STATEMENT_MOVES.values() for move in moves}
    source = (ROOT / "tracker" / "services.py").read_text()
    called = {m for m in queries.MOVES if re.search(rf"\btask\.{m}\(", source)}
    assert set(queries.MOVES) == made | called, set(queries.MOVES) - made - called


def test_no_other_tracker_code_writes_a_task_status():
    """Status literals in SQL and ORM `.update(status=...)` only in tracker/queries.py (the counters' reads of
    the outcome by status aside)."""
    statuses = "|".join(TaskStatus.values)
    offenders = []
    for path in sorted((ROOT / "tracker").glob("*.py")):
        if path.name in ("queries.py", "counters.py", "fsm.py"):
            continue
        text = path.read_text()
        if re.search(rf"SET status|status = '({statuses})'", text):
            offenders.append(f"{path.name}: SQL status literal")
        for node in ast.walk(ast.parse(text)):
            if orm_update_of(node, "status"):
                offenders.append(f"{path.name}:{node.lineno}: .update(status=...)")
    assert offenders == []


def test_the_state_groups_agree_with_the_declarations():
    moves = queries.MOVES
    assert set(DUE_STATUSES) == set(moves["start"].sources) == set(moves["cancel"].sources)
    assert set(FINISHED_STATUSES) == {moves[m].target for m in ("complete", "fail", "cancel")}
    assert set(services.BULK_LEGAL["retry"]) == set(moves["operator_retry"].sources)
    for status in TaskStatus.values:
        task = ProcessTracker(status=status)
        assert task.can_retry() == (status in moves["operator_retry"].sources)
        assert task.can_cancel() == (status in moves["cancel"].sources)


def test_jobs_change_state_only_through_their_transitions():
    """Jobs change state only through their transitions; workflow steps also through the set-based statements of
    jobs/workflows/queries.py (checked below): no `.update(state=...)`, no `SET state` anywhere else."""
    offenders = []
    for path in sorted((ROOT / "jobs").rglob("*.py")):
        if "migrations" in path.parts or path == ROOT / "jobs" / "workflows" / "queries.py":
            continue
        text = path.read_text()
        if re.search(r"\bSET state\b", text):
            offenders.append(f"{path.relative_to(ROOT)}: SET state")
        for node in ast.walk(ast.parse(text)):
            if orm_update_of(node, "state"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: .update(state=...)")
    assert offenders == []


@pytest.mark.parametrize("name", sorted(workflow_queries.STATEMENT_MOVES))
def test_each_step_statement_makes_exactly_its_declared_transitions(name):
    sql = getattr(workflow_queries, name)
    assert statement_pairs(sql, "state") == declared_pairs(workflow_queries.STATEMENT_MOVES[name]), sql


def test_every_step_state_changing_statement_says_which_transitions_it_makes():
    changing = {
        name
        for name, value in vars(workflow_queries).items()
        if isinstance(value, str) and name.isupper() and re.search(r"\bSET state\b", value)
    }
    assert changing == set(workflow_queries.STATEMENT_MOVES)
