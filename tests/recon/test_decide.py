"""The engine's decide step without a database: model instances built in memory (these tests have no `db`
fixture, so any query fails them). Hypothesis checks that a batch of N decides what N batches of one decide when
each sees the effects of the ones before, that every entry gets one outcome and every plan balances."""

import datetime as dt
import itertools
import uuid
from collections import defaultdict
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recon import errors
from recon.matching.decide import (
    Batch,
    Plan,
    allowed_difference,
    check_balanced,
    decide,
    entry_problem,
    key_form,
    mismatch_reasons,
)
from recon.models import Account, Entry, ReconRule, StagingEntry, Transaction

DAY = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
MERCHANT = "m1"


def account(currency="USD") -> Account:
    return Account(
        account_id=uuid.uuid4(), merchant_id=MERCHANT, account_name="a", account_type="DEBIT_NORMAL", currency=currency
    )


PAYMENTS, BANK, DIFF, ORPHAN = account(), account(), account(), account()


def rule(*, tolerance="0", pct="0", window=None, difference=True) -> ReconRule:
    return ReconRule(
        id=uuid.uuid4(),
        merchant_id=MERCHANT,
        account_one=PAYMENTS,
        account_two=BANK,
        match_key="order_id",
        amount_tolerance=Decimal(tolerance),
        amount_tolerance_pct=Decimal(pct),
        date_window_days=window,
        difference_account_id=DIFF.pk if difference else None,
    )


def staging(acct, mode, *, side="CREDIT", amount="10.00", currency="USD", order_id="o1", day=0) -> StagingEntry:
    return StagingEntry(
        staging_entry_id=uuid.uuid4(),
        account=acct,
        entry_type=side,
        amount=Decimal(amount),
        currency=currency,
        effective_date=DAY + dt.timedelta(days=day),
        processing_mode=mode,
        metadata={"order_id": order_id} if order_id is not None else {},
    )


def expectation(r: ReconRule, order_id, *, amount="10.00", day=0) -> tuple[Transaction, list[Entry]]:
    """Version 1 of a transaction of `r`: a POSTED DEBIT on account_one and an EXPECTED CREDIT on account_two."""
    txn = Transaction(
        transaction_id=uuid.uuid4(),
        logical_transaction_id=f"{PAYMENTS.pk}:{order_id}",
        version=1,
        status="EXPECTED",
        amount=Decimal(amount),
        currency="USD",
        merchant_id=MERCHANT,
        rule_id=r.pk,
        metadata={"order_id": order_id},
    )
    when = DAY + dt.timedelta(days=day)
    legs = [
        Entry(
            entry_id=uuid.uuid4(),
            transaction=txn,
            account=PAYMENTS,
            entry_type="DEBIT",
            amount=txn.amount,
            currency="USD",
            status="POSTED",
            effective_date=when,
            metadata={},
        ),
        Entry(
            entry_id=uuid.uuid4(),
            transaction=txn,
            account=BANK,
            entry_type="CREDIT",
            amount=txn.amount,
            currency="USD",
            status="EXPECTED",
            effective_date=when,
            metadata={"order_id": order_id},
        ),
    ]
    return txn, legs


def confirmation_batch(r: ReconRule, entries, expectations, periods=()) -> Batch:
    candidates, live = defaultdict(list), {}
    for txn, legs in expectations:
        live[txn.pk] = legs
        candidates[(r.pk, key_form(legs[1].metadata["order_id"]))].append(legs[1])
    return Batch(
        mode="CONFIRMATION",
        entries=list(entries),
        rules={r.pk: r},
        periods=list(periods),
        candidates=dict(candidates),
        live=live,
    )


def ids():
    counter = itertools.count()
    return lambda n: [f"00000000-0000-0000-0000-{next(counter):012d}" for _ in range(n)]


def legs_balance(plan: Plan) -> None:
    for created in plan.created:
        check_balanced((x["entry_type"], x["amount"], x["currency"]) for x in created.legs)
    for f in plan.fulfilments:
        legs = [(leg.entry_type, leg.amount, leg.currency) for leg, _ in f.carried]
        legs.append((f.staging.entry_type, f.staging.amount, f.staging.currency))
        if f.difference_leg:
            legs.append((f.difference_leg[2], f.difference_leg[3], f.staging.currency))
        check_balanced(legs)


def summary(plan: Plan) -> list:
    """The plan without generated ids: outcomes, then what each fulfilment and mismatch touched."""
    return [
        [(o.entry.pk, o.to_status, o.metadata, o.reason, o.mismatch_transaction_id) for o in plan.outcomes],
        [(f.old.pk, f.difference, f.difference_leg and f.difference_leg[1:]) for f in plan.fulfilments],
        plan.mismatched,
        [c.transaction["logical_transaction_id"] for c in plan.created],
    ]


def one_by_one(batch: Batch) -> Plan:
    """N batches of one, each seeing what the ones before it did (fulfilled or mismatched transactions leave the
    candidates, created logical ids are taken): what N database round trips would decide."""
    total, gone, taken = Plan(), set(), set(batch.taken)
    for entry in batch.entries:
        candidates = {k: [c for c in v if c.transaction_id not in gone] for k, v in batch.candidates.items()}
        single = Batch(
            mode=batch.mode,
            entries=[entry],
            rules=batch.rules,
            periods=batch.periods,
            taken=set(taken),
            candidates=candidates,
            live=batch.live,
        )
        plan = decide(single, now=DAY, new_ids=ids())
        gone |= {f.old.pk for f in plan.fulfilments} | {pk for pk, _ in plan.mismatched}
        taken |= {c.transaction["logical_transaction_id"] for c in plan.created}
        for name in ("outcomes", "created", "fulfilments", "mismatched"):
            getattr(total, name).extend(getattr(plan, name))
    return total


amounts = st.sampled_from(["10.00", "10.50", "9.25", "25.00", "11.00"])
orders = st.sampled_from(["o1", "o2", "o3", None])
confirmations = st.builds(
    lambda side, amount, currency, order_id, day: staging(
        BANK, "CONFIRMATION", side=side, amount=amount, currency=currency, order_id=order_id, day=day
    ),
    st.sampled_from(["CREDIT", "CREDIT", "DEBIT"]),
    amounts,
    st.sampled_from(["USD", "USD", "EUR"]),
    orders,
    st.integers(0, 4),
)


@given(
    entries=st.lists(confirmations, max_size=12),
    expected=st.lists(st.tuples(st.sampled_from(["o1", "o2", "o3"]), amounts, st.integers(0, 2)), max_size=5),
    tolerance=st.sampled_from(["0", "1.00"]),
    pct=st.sampled_from(["0", "5"]),
    window=st.sampled_from([None, 1]),
    closed=st.booleans(),
)
def test_confirmations_batch_of_n_decides_as_n_batches_of_one(entries, expected, tolerance, pct, window, closed):
    r = rule(tolerance=tolerance, pct=pct, window=window)
    periods = [(MERCHANT, dt.date(2026, 11, 4), dt.date(2026, 11, 30))] if closed else []
    batch = confirmation_batch(r, entries, [expectation(r, o, amount=a, day=d) for o, a, d in expected], periods)
    plan = decide(batch, now=DAY, new_ids=ids())
    assert [o.entry for o in plan.outcomes] == entries
    assert summary(plan) == summary(one_by_one(batch))
    touched = [f.old.pk for f in plan.fulfilments] + [pk for pk, _ in plan.mismatched]
    assert len(touched) == len(set(touched))
    legs_balance(plan)
    for o in plan.outcomes:
        assert ("match_type" in o.metadata) == (o.to_status == "PROCESSED")
        assert ("error_type" in o.metadata) == (o.to_status == "NEEDS_MANUAL_REVIEW")


transactions = st.builds(
    lambda acct, side, amount, currency, order_id, day: staging(
        acct, "TRANSACTION", side=side, amount=amount, currency=currency, order_id=order_id, day=day
    ),
    st.sampled_from([PAYMENTS, PAYMENTS, ORPHAN]),
    st.sampled_from(["DEBIT", "CREDIT"]),
    amounts,
    st.sampled_from(["USD", "USD", "EUR"]),
    orders,
    st.integers(0, 4),
)


@given(entries=st.lists(transactions, max_size=12), taken=st.sets(st.sampled_from(["o1", "o2"])))
def test_transactions_batch_of_n_decides_as_n_batches_of_one(entries, taken):
    r = rule()
    batch = Batch(
        mode="TRANSACTION",
        entries=entries,
        rules={r.pk: r},
        taken={f"{PAYMENTS.pk}:{o}" for o in taken},
        periods=[(MERCHANT, dt.date(2026, 11, 4), dt.date(2026, 11, 30))],
    )
    plan = decide(batch, now=DAY, new_ids=ids())
    assert [o.entry for o in plan.outcomes] == entries
    assert summary(plan) == summary(one_by_one(batch))
    logicals = [c.transaction["logical_transaction_id"] for c in plan.created]
    assert len(logicals) == len(set(logicals)) and not set(logicals) & batch.taken
    legs_balance(plan)
    for created in plan.created:
        expected_leg = created.legs[1]
        assert expected_leg["account_id"] == BANK.pk and expected_leg["status"] == "EXPECTED"


def test_checks_run_in_order_currency_then_closed_period():
    periods = [(MERCHANT, dt.date(2026, 11, 1), dt.date(2026, 11, 1))]
    assert isinstance(
        entry_problem(staging(BANK, "CONFIRMATION", currency="EUR"), periods), errors.CurrencyMismatchError
    )
    assert isinstance(entry_problem(staging(BANK, "CONFIRMATION"), periods), errors.PeriodClosedError)
    assert entry_problem(staging(BANK, "CONFIRMATION", day=1), periods) is None


@pytest.mark.parametrize(
    "a, b, equal",
    [
        (1, 1.0, True),
        (1, "1", False),
        (True, 1, False),
        ({"a": 1, "b": [1, 2]}, {"b": [1, 2.0], "a": 1}, True),
        ([1, 2], [2, 1], False),
        ("x", "x", True),
        (None, None, True),
    ],
)
def test_key_form_is_jsonb_equality(a, b, equal):
    assert (key_form(a) == key_form(b)) is equal


def test_allowed_difference_is_the_larger_tolerance():
    assert allowed_difference(None, Decimal("100")) == 0
    assert allowed_difference(rule(tolerance="1.00", pct="2"), Decimal("100")) == Decimal("2.0000")
    assert allowed_difference(rule(tolerance="3.00", pct="2"), Decimal("100")) == Decimal("3.00")


def test_date_window_edge_is_inside():
    r = rule(window=2)
    _, legs = expectation(r, "o1")
    assert mismatch_reasons(staging(BANK, "CONFIRMATION", day=2), legs[1], r) == []
    assert mismatch_reasons(staging(BANK, "CONFIRMATION", day=3), legs[1], r)[0].startswith("date outside")


def test_difference_without_difference_account_is_unbalanced():
    r = rule(tolerance="1.00", difference=False)
    batch = confirmation_batch(r, [staging(BANK, "CONFIRMATION", amount="10.50")], [expectation(r, "o1")])
    plan = decide(batch, now=DAY, new_ids=ids())
    assert plan.outcomes[0].metadata["error_type"] == "UnbalancedTransactionError"


def test_too_long_key_value_goes_to_review():
    entry = staging(PAYMENTS, "TRANSACTION", order_id="x" * 300)
    r = rule()
    plan = decide(Batch(mode="TRANSACTION", entries=[entry], rules={r.pk: r}), now=DAY, new_ids=ids())
    assert plan.outcomes[0].metadata["error_type"] == "InvalidValueError" and not plan.created


def forced_batch(r: ReconRule, entry: StagingEntry, **kw) -> Batch:
    txn, legs = expectation(r, "o1")
    return Batch(
        mode="FORCED",
        entries=[entry],
        rules={r.pk: r},
        targets={entry.pk: legs[1]},
        live={txn.pk: legs},
        transactions={txn.pk: txn},
        **kw,
    )


def test_forced_match_outside_tolerance_needs_a_write_off():
    r = rule(tolerance="1.00", difference=False)
    entry = staging(BANK, "CONFIRMATION", amount="13.00", day=9)  # outside the tolerance; no date window applies
    with pytest.raises(errors.UnprocessableError, match="beyond the rule's tolerance"):
        decide(forced_batch(r, entry), now=DAY, new_ids=ids())
    other = account()
    plan = decide(forced_batch(r, entry, write_off=True, difference_account_id=other.pk), now=DAY, new_ids=ids())
    (f,) = plan.fulfilments
    assert f.difference_leg[1:] == (other.pk, "DEBIT", Decimal("3.00")) and f.why == "forced match with write-off"
    assert plan.outcomes[0].from_status == "NEEDS_MANUAL_REVIEW" and plan.outcomes[0].to_status == "PROCESSED"
    legs_balance(plan)


def test_forced_match_refuses_a_closed_period_and_a_settled_leg():
    r = rule()
    entry = staging(BANK, "CONFIRMATION")
    with pytest.raises(errors.PeriodClosedConflict):
        decide(forced_batch(r, entry, periods=[(MERCHANT, DAY.date(), DAY.date())]), now=DAY, new_ids=ids())
    batch = forced_batch(r, entry)
    next(iter(batch.transactions.values())).__dict__["status"] = "POSTED"
    with pytest.raises(errors.IllegalStateError):
        decide(batch, now=DAY, new_ids=ids())


def test_the_writer_follows_the_declared_state_machines():
    from recon.matching.write import IllegalMoveError, check_moves, declared_moves

    assert ("PENDING", "PROCESSED") in declared_moves(StagingEntry)
    check_moves(StagingEntry, {("PENDING", "NEEDS_MANUAL_REVIEW"), ("NEEDS_MANUAL_REVIEW", "PROCESSED")})
    check_moves(Transaction, {("EXPECTED", "ARCHIVED"), ("MISMATCH", "ARCHIVED"), ("EXPECTED", "MISMATCH")})
    with pytest.raises(IllegalMoveError):
        check_moves(StagingEntry, {("PROCESSED", "PENDING")})
    with pytest.raises(IllegalMoveError):
        check_moves(Transaction, {("POSTED", "EXPECTED")})
