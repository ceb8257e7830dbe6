"""Grouped matching in the decide step, without a database (model instances built in memory; no `db` fixture):
one_to_many payouts, many_to_one instalments, confirmation keys taken by a pattern, and the pro-rata split."""

import uuid
from collections import defaultdict
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from recon.matching.decide import Batch, confirmation_value, decide, group_shares, key_form
from recon.models import Entry, ReconRule
from tests.recon.test_decide import BANK, DAY, DIFF, MERCHANT, PAYMENTS, expectation, ids, staging


def grouped_rule(mode, *, tolerance="0", pct="0", pattern="", confirmation_key="") -> ReconRule:
    return ReconRule(
        id=uuid.uuid4(),
        merchant_id=MERCHANT,
        account_one=PAYMENTS,
        account_two=BANK,
        match_key="order_id",
        amount_tolerance=Decimal(tolerance),
        amount_tolerance_pct=Decimal(pct),
        difference_account_id=DIFF.pk,
        match_mode=mode,
        group_key="payout_id" if mode == "one_to_many" else "",
        confirmation_key=confirmation_key,
        confirmation_key_pattern=pattern,
    )


def member(r, order_id, payout, amount):
    txn, legs = expectation(r, order_id, amount=amount)
    txn.group_value = payout
    for leg in legs:
        leg.metadata = {**leg.metadata, "payout_id": payout}
    return txn, legs


def batch_of(r, entries, expectations, group_max=10_000) -> Batch:
    candidates, groups, live = defaultdict(list), defaultdict(list), {}
    for txn, legs in expectations:
        live[txn.pk] = legs
        candidates[(r.pk, key_form(legs[1].metadata["order_id"]))].append(legs[1])
        if txn.group_value is not None:
            groups[(r.pk, txn.group_value)].append(legs[1])
    return Batch(
        mode="CONFIRMATION",
        entries=list(entries),
        rules={r.pk: r},
        candidates=dict(candidates),
        groups=dict(groups),
        live=live,
        group_max=group_max,
    )


def payout(amount, key="P1"):
    entry = staging(BANK, "CONFIRMATION", amount=amount, order_id=None)
    entry.metadata = {"payout_id": key}
    return entry


def payout_rule(**kw):
    return grouped_rule("one_to_many", confirmation_key="payout_id", **kw)


def own_amounts(plan):
    """The amount each member's new version posts on account_two (own leg) and on the difference account."""
    return [(f.amount, f.difference_leg[3] if f.difference_leg else Decimal(0)) for f in plan.fulfilments]


def test_payout_within_tolerance_fulfils_every_member_and_splits_the_fee_pro_rata():
    r = payout_rule(pct="5")
    members = [member(r, f"o{i}", "P1", a) for i, a in enumerate(["10.00", "20.00", "70.00"])]
    plan = decide(batch_of(r, [payout("97.00")], members), now=DAY, new_ids=ids())
    assert [o.to_status for o in plan.outcomes] == ["PROCESSED"]
    assert plan.outcomes[0].metadata["group"]["sum"] == "100.00"
    assert [f.old.pk for f in plan.fulfilments] == [t.pk for t, _ in members]
    assert own_amounts(plan) == [
        (Decimal("9.70"), Decimal("0.30")),
        (Decimal("19.40"), Decimal("0.60")),
        (Decimal("67.90"), Decimal("2.10")),
    ]
    assert sum(f.amount for f in plan.fulfilments) == Decimal("97.00")
    assert {f.extra["match_group"] for f in plan.fulfilments} == {plan.outcomes[0].metadata["match_group"]}


def test_payout_outside_tolerance_is_a_mismatch_and_fulfils_nothing():
    r = payout_rule(pct="1")
    members = [member(r, f"o{i}", "P1", "50.00") for i in range(2)]
    plan = decide(batch_of(r, [payout("97.00")], members), now=DAY, new_ids=ids())
    assert plan.fulfilments == [] and plan.mismatched == []
    outcome = plan.outcomes[0]
    assert (outcome.to_status, outcome.metadata["error_type"]) == ("NEEDS_MANUAL_REVIEW", "MismatchError")
    assert outcome.metadata["group"] | {"member_transaction_ids": None} == {
        "rule_id": str(r.pk),
        "key": "P1",
        "members": 2,
        "member_transaction_ids": None,
        "sum": "100.00",
        "confirmation_amount": "97.00",
        "difference": "-3.00",
    }


def test_payout_without_members_and_above_the_cap():
    r = payout_rule()
    plan = decide(batch_of(r, [payout("10.00", key="P9")], [member(r, "o1", "P1", "10.00")]), now=DAY, new_ids=ids())
    assert plan.outcomes[0].metadata["error_type"] == "NoMatchFoundError"
    members = [member(r, f"o{i}", "P1", "1.00") for i in range(3)]
    plan = decide(batch_of(r, [payout("3.00")], members, group_max=2), now=DAY, new_ids=ids())
    assert plan.outcomes[0].metadata["error_type"] == "AmbiguousMatchError"


def test_a_second_payout_for_a_settled_group_finds_nothing():
    r = payout_rule()
    members = [member(r, f"o{i}", "P1", "5.00") for i in range(2)]
    plan = decide(batch_of(r, [payout("10.00"), payout("10.00")], members), now=DAY, new_ids=ids())
    assert [o.metadata.get("error_type") for o in plan.outcomes] == [None, "NoMatchFoundError"]
    assert len(plan.fulfilments) == 2


def test_instalments_pay_part_then_the_rest():
    r = grouped_rule("many_to_one", tolerance="0.05")
    txn, legs = expectation(r, "inv1", amount="100.00")
    plan = decide(
        batch_of(r, [staging(BANK, "CONFIRMATION", amount="30.00", order_id="inv1")], [(txn, legs)]),
        now=DAY,
        new_ids=ids(),
    )
    (f,) = plan.fulfilments
    assert (f.status, f.amount, f.remainder_leg[3]) == ("EXPECTED", Decimal("30.00"), Decimal("70.00"))
    assert (f.extra["paid"], f.extra["remaining"]) == ("30.00", "70.00")
    # version 2 as written: 30.00 POSTED on the bank, 70.00 still EXPECTED; the rest, 0.04 short (within
    # tolerance): POSTED, the difference booked
    paid = Entry(
        entry_id=uuid.uuid4(),
        transaction=txn,
        account=BANK,
        entry_type="CREDIT",
        amount=Decimal("30.00"),
        currency="USD",
        status="POSTED",
        effective_date=DAY,
        metadata={},
    )
    legs[1].amount = Decimal("70.00")
    legs.append(paid)
    plan = decide(
        batch_of(r, [staging(BANK, "CONFIRMATION", amount="69.96", order_id="inv1")], [(txn, legs)]),
        now=DAY,
        new_ids=ids(),
    )
    (f,) = plan.fulfilments
    assert (f.status, f.difference, f.extra["remaining"]) == ("POSTED", Decimal("-0.04"), "0.0000")


def two_instalments(first: str, second: str):
    """The plan of one batch of two instalments of `first` and `second` against one expectation of 100.00."""
    r = grouped_rule("many_to_one")
    txn, legs = expectation(r, "inv1", amount="100.00")
    entries = [staging(BANK, "CONFIRMATION", amount=a, order_id="inv1") for a in (first, second)]
    return decide(batch_of(r, entries, [(txn, legs)]), now=DAY, new_ids=ids())


def test_an_overpaying_instalment_is_a_mismatch_and_the_expectation_stays_open():
    plan = two_instalments("100.01", "100.00")
    assert [o.metadata.get("error_type") for o in plan.outcomes] == ["MismatchError", None]
    assert plan.mismatched == [] and plan.fulfilments[0].status == "POSTED"


def test_a_second_instalment_in_one_batch_waits_for_the_next_pass():
    plan = two_instalments("30.00", "70.00")
    assert len(plan.outcomes) == 1 and len(plan.deferred) == 1


def test_confirmation_key_pattern_takes_the_group_of_the_first_match():
    r = grouped_rule("one_to_one", confirmation_key="remittance_info", pattern=r"(ORD-\d+)")
    entry = staging(BANK, "CONFIRMATION", order_id=None)
    entry.metadata = {"remittance_info": "paid ORD-17 and ORD-18"}
    assert confirmation_value(r, entry) == "ORD-17"
    entry.metadata = {"remittance_info": "no order here"}
    assert confirmation_value(r, entry) is None
    plan = decide(batch_of(r, [entry], [expectation(r, "ORD-17")]), now=DAY, new_ids=ids())
    assert plan.outcomes[0].metadata["error_type"] == "NoMatchFoundError"


@given(
    st.lists(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("10000"), places=2), min_size=1, max_size=50),
    st.decimals(min_value=Decimal("-50"), max_value=Decimal("50"), places=2),
    st.sampled_from(["USD", "JPY", "BHD"]),
)
def test_shares_add_up_to_the_difference_exactly(amounts, difference, currency):
    shares = group_shares(difference, amounts, currency)
    assert sum(shares) == difference
    places = {"USD": 2, "JPY": 0, "BHD": 3}[currency]
    largest = max(range(len(amounts)), key=lambda i: (amounts[i], -i))
    assert all(s == s.quantize(Decimal(1).scaleb(-places)) for i, s in enumerate(shares) if i != largest)
