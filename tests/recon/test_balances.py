"""Balance totals maintained by statement-level triggers (recon.models.AccountBalance, migration 0003): they
equal the aggregate of the entries after any engine activity and any raw SQL, and the API serves the same
figures as the aggregate path."""

import datetime as dt
import random
import threading
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recon import balances, errors, services
from recon.models import Account, AccountBalance, Entry, StagingEntry, Transaction
from tests.recon.factories import AccountFactory, MerchantFactory, ReconRuleFactory
from tracker.worker import Worker

E = Entry._meta.db_table
ZERO4 = (Decimal("0"),) * 4


def insert_entries(txn, account, n, *, start=0, status_cycle=("POSTED", "POSTED", "EXPECTED", "ARCHIVED")):
    """bench_balance's raw-SQL insert: n entries on one account in one statement."""
    statuses = "ARRAY[" + ",".join(f"'{s}'" for s in status_cycle) + "]"
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {E} (entry_id, transaction_id, account_id, entry_type, amount, currency, status,
                effective_date, metadata, created_at)
            SELECT gen_random_uuid(), %s, %s, (ARRAY['DEBIT','CREDIT'])[1 + i %% 2], 1 + (i %% 1000) / 100.0, 'USD',
                ({statuses})[1 + i %% {len(status_cycle)}], now(), '{{}}', now()
            FROM generate_series(%s, %s) i""",
            [txn.pk, account.pk, start + 1, start + n],
        )


def expected_from_python(account_ids):
    """The four sums per account computed in Python from the entry rows."""
    out = {pk: [Decimal("0")] * 4 for pk in account_ids}
    for pk, side, status, amount in Entry.objects.filter(account_id__in=account_ids).values_list(
        "account_id", "entry_type", "status", "amount"
    ):
        if status == "ARCHIVED":
            continue
        i = 0 if side == "DEBIT" else 1
        if status == "POSTED":
            out[pk][i] += amount
        out[pk][2 + i] += amount
    return {pk: tuple(v) for pk, v in out.items()}


def maintained(account_ids):
    rows = {
        a.pk: tuple(getattr(a, s) for s in balances.SUMS)
        for a in balances.with_balance_sums(Account.objects.filter(pk__in=account_ids))
    }
    return rows


def assert_exact(account_ids):
    account_ids = list(account_ids)
    assert balances.balance_drift(Account.objects.filter(pk__in=account_ids)) == {}
    assert maintained(account_ids) == expected_from_python(account_ids)


@pytest.fixture
def bulk_txn(ledger):
    return Transaction.objects.create(
        logical_transaction_id="bulk", version=1, status="POSTED", amount=1, currency="USD", merchant=ledger.merchant
    )


# --- engine activity ------------------------------------------------------------------------------------------

amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("500"), places=2)
step = st.one_of(
    st.tuples(
        st.just("entry"),
        st.sampled_from(["TRANSACTION", "CONFIRMATION"]),
        st.sampled_from(["payments", "bank", "orphan"]),
        st.sampled_from(["DEBIT", "CREDIT"]),
        amounts,
        st.sampled_from(["o1", "o2", "o3", None]),
        st.sampled_from(["USD", "USD", "USD", "EUR"]),
        st.integers(min_value=0, max_value=4),
    ),
    st.tuples(st.just("drain")),
    st.tuples(st.just("resolve"), st.sampled_from(["match", "ignore", "reprocess"]), st.integers(0, 5)),
)


@pytest.mark.django_db
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(steps=st.lists(step, min_size=1, max_size=16), tolerance=st.sampled_from(["0", "1.00"]))
def test_totals_equal_aggregate_after_any_engine_sequence(steps, tolerance):
    with transaction.atomic():
        merchant = MerchantFactory()
        accounts = {
            "payments": AccountFactory(merchant=merchant),
            "orphan": AccountFactory(merchant=merchant),
            "bank": AccountFactory(merchant=merchant, account_type="CREDIT_NORMAL"),
        }
        diff = AccountFactory(merchant=merchant)
        ReconRuleFactory(
            merchant=merchant,
            account_one=accounts["payments"],
            account_two=accounts["bank"],
            amount_tolerance=Decimal(tolerance),
            difference_account=diff,
        )
        ids = [a.pk for a in accounts.values()] + [diff.pk]
        worker = Worker("balances")
        for s in steps:
            if s[0] == "drain":
                worker.drain(budget_seconds=30)
            elif s[0] == "resolve":
                _, action, pick = s
                review = list(
                    StagingEntry.objects.filter(account__merchant=merchant, status="NEEDS_MANUAL_REVIEW").order_by(
                        "created_at"
                    )
                )
                if not review:
                    continue
                entry = review[pick % len(review)]
                target = (
                    Entry.objects.filter(account=entry.account, status="EXPECTED", entry_type=entry.entry_type)
                    .order_by("created_at")
                    .first()
                )
                try:
                    with transaction.atomic():
                        services.staging_entry_resolve(
                            staging_entry_id=entry.pk,
                            action=action,
                            by="tester",
                            entry_id=target.pk if target else None,
                            reason="test",
                        )
                except (errors.ReconError, ValidationError):
                    pass
            else:
                _, mode, account, side, amount, order_id, currency, day = s
                services.staging_entry_create(
                    account=accounts[account],
                    entry_type=side,
                    amount=amount,
                    currency=currency,
                    effective_date=dt.datetime(2026, 11, 1 + day, tzinfo=dt.UTC),
                    processing_mode=mode,
                    metadata={"order_id": order_id} if order_id else {},
                )
            assert_exact(ids)
        worker.drain(budget_seconds=30)
        assert_exact(ids)
        transaction.set_rollback(True)


def test_randomized_raw_sql_statements(ledger, bulk_txn):
    """Random multi-account INSERT / UPDATE (status, side, amount, account) / DELETE statements."""
    rng = random.Random(5)
    extra = [AccountFactory(merchant=ledger.merchant) for _ in range(3)]
    ids = [ledger.payments.pk, ledger.bank.pk] + [a.pk for a in extra]
    for acc in (ledger.payments, ledger.bank, *extra):
        insert_entries(bulk_txn, acc, 40)
    assert_exact(ids)
    with connection.cursor() as cursor:
        for _ in range(40):
            op = rng.choice(["status", "side", "amount", "move", "delete", "insert", "metadata"])
            target = str(rng.choice(ids))
            frac = rng.random()
            if op == "status":
                cursor.execute(
                    f"UPDATE {E} SET status = %s WHERE random() < %s",
                    [rng.choice(["POSTED", "EXPECTED", "ARCHIVED"]), frac],
                )
            elif op == "side":
                cursor.execute(
                    f"UPDATE {E} SET entry_type = CASE entry_type WHEN 'DEBIT' THEN 'CREDIT' "
                    f"ELSE 'DEBIT' END WHERE random() < %s",
                    [frac],
                )
            elif op == "amount":
                cursor.execute(
                    f"UPDATE {E} SET amount = amount + 0.0001 * (1 + floor(random() * 50)) WHERE random() < %s", [frac]
                )
            elif op == "move":
                cursor.execute(f"UPDATE {E} SET account_id = %s WHERE random() < %s", [target, frac / 3])
            elif op == "delete":
                cursor.execute(f"DELETE FROM {E} WHERE random() < %s", [frac / 4])
            elif op == "metadata":
                cursor.execute(f"UPDATE {E} SET metadata = '{{\"x\": 1}}'")
            else:
                insert_entries(bulk_txn, Account.objects.get(pk=target), rng.randint(1, 30), start=rng.randint(0, 999))
            assert_exact(ids)


def test_raw_insert_update_delete_reflected(ledger, bulk_txn):
    insert_entries(bulk_txn, ledger.payments, 1000)
    # i = 1..1000: DEBIT when i even, amount 1 + (i % 1000)/100; status cycle POSTED, POSTED, EXPECTED, ARCHIVED
    assert_exact([ledger.payments.pk])
    before = balances.balances_of(ledger.payments)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {E} SET status = 'POSTED' WHERE account_id = %s AND status = 'EXPECTED'", [ledger.payments.pk]
        )
    assert_exact([ledger.payments.pk])
    after = balances.balances_of(ledger.payments)
    assert after["pending_balance"] == before["pending_balance"]
    assert after["posted_balance"] != before["posted_balance"]
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {E} WHERE account_id = %s", [ledger.payments.pk])
    assert maintained([ledger.payments.pk])[ledger.payments.pk] == ZERO4
    assert balances.balances_of(ledger.payments) == {k: Decimal("0") for k in before}


def test_known_figures_and_archived_never_count(ledger, bulk_txn):
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {E} (entry_id, transaction_id, account_id, entry_type, amount, currency, status,
                effective_date, metadata, created_at)
            VALUES (gen_random_uuid(), %(t)s, %(a)s, 'DEBIT', 100, 'USD', 'POSTED', now(), '{{}}', now()),
                   (gen_random_uuid(), %(t)s, %(a)s, 'DEBIT', 7, 'USD', 'EXPECTED', now(), '{{}}', now()),
                   (gen_random_uuid(), %(t)s, %(a)s, 'CREDIT', 30, 'USD', 'POSTED', now(), '{{}}', now()),
                   (gen_random_uuid(), %(t)s, %(a)s, 'CREDIT', 5, 'USD', 'EXPECTED', now(), '{{}}', now()),
                   (gen_random_uuid(), %(t)s, %(a)s, 'CREDIT', 999, 'USD', 'ARCHIVED', now(), '{{}}', now())""",
            {"t": bulk_txn.pk, "a": ledger.payments.pk},
        )
    row = AccountBalance.objects.get(pk=ledger.payments.pk)
    assert (row.posted_debits, row.posted_credits, row.pending_debits, row.pending_credits) == (
        Decimal("100"),
        Decimal("30"),
        Decimal("107"),
        Decimal("35"),
    )
    assert balances.balances_of(ledger.payments) == {
        "posted_balance": Decimal("70"),
        "pending_balance": Decimal("72"),
        "available_balance": Decimal("65"),
    }


def test_new_account_has_no_row_and_zero_balances(ledger, staff_api):
    account = services.account_create(
        merchant=ledger.merchant,
        account_name="new",
        account_type="CREDIT_NORMAL",
        currency="USD",
        initial_balance=Decimal("12.50"),
    )
    assert not AccountBalance.objects.filter(pk=account.pk).exists()
    body = staff_api.get(f"/api/accounts/{account.pk}/balances/").json()
    assert (body["posted_balance"], body["pending_balance"], body["available_balance"]) == ("12.50",) * 3
    services.account_delete(account=account)


def test_metadata_only_update_writes_no_totals(ledger, bulk_txn):
    insert_entries(bulk_txn, ledger.payments, 10)
    stamp = AccountBalance.objects.get(pk=ledger.payments.pk).updated_at
    Entry.objects.filter(account=ledger.payments).update(metadata={"note": 1})
    assert AccountBalance.objects.get(pk=ledger.payments.pk).updated_at == stamp


def test_account_with_zeroed_row_can_be_deleted(ledger, bulk_txn):
    account = AccountFactory(merchant=ledger.merchant)
    insert_entries(bulk_txn, account, 5)
    Entry.objects.filter(account=account).delete()
    assert maintained([account.pk])[account.pk] == ZERO4
    services.account_delete(account=account)
    assert not AccountBalance.objects.filter(pk=account.pk).exists()


def test_rebuild_repairs_drift(ledger, bulk_txn):
    insert_entries(bulk_txn, ledger.payments, 100)
    AccountBalance.objects.filter(pk=ledger.payments.pk).update(posted_debits=Decimal("1"))
    assert set(balances.balance_drift()) == {ledger.payments.pk}
    assert balances.balance_totals_rebuild() == Account.objects.count()
    assert balances.balance_drift() == {}


# --- the API serves the same figures as the aggregate path ----------------------------------------------------


def _aggregate_figures(account):
    return balances.figures(balances.with_aggregated_sums(Account.objects.filter(pk=account.pk)).get())


def test_api_balances_match_aggregate(ledger, bulk_txn, staff_api):
    from recon.serializers import money_str

    ledger.bank.initial_balance = Decimal("10.25")
    ledger.bank.save()
    insert_entries(bulk_txn, ledger.payments, 777)
    insert_entries(bulk_txn, ledger.bank, 333, status_cycle=("EXPECTED", "POSTED", "ARCHIVED"))
    for account in (ledger.payments, ledger.bank):
        body = staff_api.get(f"/api/accounts/{account.pk}/balances/").json()
        want = {k: money_str(v) for k, v in _aggregate_figures(account).items()}
        assert {k: body[k] for k in want} == want
    listing = staff_api.get(f"/api/merchants/{ledger.merchant.pk}/accounts/").json()
    rows = listing["results"] if isinstance(listing, dict) else listing
    assert len(rows) == 2
    for row in rows:
        account = Account.objects.get(pk=row["account_id"])
        assert row["balances"] == {k: money_str(v) for k, v in _aggregate_figures(account).items()}


def test_balance_reads_are_one_query_without_entry_scan(ledger, bulk_txn, django_assert_num_queries):
    insert_entries(bulk_txn, ledger.payments, 50)
    with django_assert_num_queries(1) as ctx:
        balances.balances_of(ledger.payments)
    assert E not in ctx.captured_queries[0]["sql"]


# --- lock order ------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_statements_lock_balance_rows_in_account_order():
    """T1 holds the lower account's row; T2's statement touching both accounts waits on the lower one before
    locking the higher, so T1 can still write the higher account: no deadlock."""
    merchant = MerchantFactory()
    low, high = sorted([AccountFactory(merchant=merchant), AccountFactory(merchant=merchant)], key=lambda a: a.pk)
    txn = Transaction.objects.create(
        logical_transaction_id="lock", version=1, status="POSTED", amount=1, currency="USD", merchant=merchant
    )
    sql = (
        f"INSERT INTO {E} (entry_id, transaction_id, account_id, entry_type, amount, currency, status, "
        f"effective_date, metadata, created_at) SELECT gen_random_uuid(), %s, a, 'DEBIT', 1, 'USD', 'POSTED', "
        f"now(), '{{}}', now() FROM unnest(%s::uuid[]) a"
    )
    both = [str(high.pk), str(low.pk)]  # the statement names the higher account first
    failures = []

    def t2():
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, [txn.pk, both])
        except Exception as exc:  # noqa: BLE001
            failures.append(exc)
        finally:
            connection.close()

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql, [txn.pk, [str(low.pk)]])
            thread = threading.Thread(target=t2)
            thread.start()
            thread.join(1.0)
            assert thread.is_alive()  # T2 waits on the lower account's row
            cursor.execute("SET LOCAL lock_timeout = '5s'")
            cursor.execute(sql, [txn.pk, [str(high.pk)]])  # would deadlock if T2 had locked `high` first
    thread.join(10)
    assert not failures
    assert maintained([low.pk, high.pk]) == {
        low.pk: (Decimal("2"), Decimal("0"), Decimal("2"), Decimal("0")),
        high.pk: (Decimal("2"), Decimal("0"), Decimal("2"), Decimal("0")),
    }
    assert balances.balance_drift() == {}


# --- migration backfill ----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_migration_backfills_existing_entries_and_accounts():
    """Entries written before 0003 (no triggers) are summed into totals; every existing account gets a row."""
    from django.db.migrations.executor import MigrationExecutor

    merchant = MerchantFactory()
    busy, idle = AccountFactory(merchant=merchant), AccountFactory(merchant=merchant)
    txn = Transaction.objects.create(
        logical_transaction_id="pre", version=1, status="POSTED", amount=1, currency="USD", merchant=merchant
    )
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("recon")
    executor.migrate([("recon", "0002_upload")])
    try:
        insert_entries(txn, busy, 500)
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(latest)
    assert set(AccountBalance.objects.values_list("pk", flat=True)) >= {busy.pk, idle.pk}
    assert maintained([idle.pk])[idle.pk] == ZERO4
    assert_exact([busy.pk, idle.pk])
    insert_entries(txn, busy, 10)  # and the triggers are back
    assert_exact([busy.pk, idle.pk])
