"""Account balances (shared/API.md, "Accounts"). ARCHIVED entries never count.

The four sums come from `AccountBalance`, running totals kept exact by statement-level triggers on the entry
table (migration 0003): one primary-key lookup per account, a LEFT JOIN for lists, whatever the number of
entries. A missing row means zero. `balance_drift` (against the entries' aggregates) and `balance_totals_rebuild`
check and repair the totals."""

from decimal import Decimal

from django.db import connections, transaction
from django.db.models import DecimalField, F, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from recon.models import Account, AccountBalance, AccountType, Entry, EntryStatus

ZERO = Value(Decimal("0"), output_field=DecimalField(max_digits=20, decimal_places=4))
TOTAL_FIELD = DecimalField(max_digits=24, decimal_places=4)
SUMS = ("posted_debits", "posted_credits", "pending_debits", "pending_credits")
POSTED = (EntryStatus.POSTED,)
PENDING = (EntryStatus.POSTED, EntryStatus.EXPECTED)


def _sum(side: str, statuses: tuple[str, ...]):
    sub = (Entry.objects.filter(account=OuterRef("pk"), entry_type=side, status__in=statuses)
           .order_by().values("account").annotate(s=Sum("amount")).values("s"))
    return Coalesce(Subquery(sub, output_field=TOTAL_FIELD), ZERO, output_field=TOTAL_FIELD)


def with_aggregated_sums(queryset: QuerySet[Account]) -> QuerySet[Account]:
    """The four sums aggregated from the entries (correlated subqueries; cost grows with the entries)."""
    return queryset.annotate(posted_debits=_sum("DEBIT", POSTED), posted_credits=_sum("CREDIT", POSTED),
                             pending_debits=_sum("DEBIT", PENDING), pending_credits=_sum("CREDIT", PENDING))


def with_balance_sums(queryset: QuerySet[Account]) -> QuerySet[Account]:
    """Annotates posted/pending debit and credit sums read from `AccountBalance` (a LEFT JOIN on its primary key:
    one query for any number of accounts)."""
    return queryset.annotate(**{name: Coalesce(F(f"balance_totals__{name}"), ZERO, output_field=TOTAL_FIELD)
                                for name in SUMS})


def figures(account: Account) -> dict:
    """The three balances from an account annotated with the four sums."""
    init = account.initial_balance
    if account.account_type == AccountType.DEBIT_NORMAL:
        inc_posted, dec_posted = account.posted_debits, account.posted_credits
        inc_pending, dec_pending = account.pending_debits, account.pending_credits
    else:
        inc_posted, dec_posted = account.posted_credits, account.posted_debits
        inc_pending, dec_pending = account.pending_credits, account.pending_debits
    return {
        "posted_balance": init + inc_posted - dec_posted,
        "pending_balance": init + inc_pending - dec_pending,
        "available_balance": init + inc_posted - dec_pending,
    }


def balances_of(account: Account) -> dict:
    """{"posted_balance", "pending_balance", "available_balance"} as Decimals. Uses the annotations of
    `with_balance_sums` when present, else queries them (one query)."""
    if not hasattr(account, "posted_debits"):
        account = with_balance_sums(Account.objects.filter(pk=account.pk)).get()
    return figures(account)


def balance_drift(queryset: QuerySet[Account] | None = None) -> dict:
    """{account_id: {"maintained": (4 sums), "aggregated": (4 sums)}} for every account whose maintained totals
    differ from the aggregate of its entries (empty when all agree). Reads every entry of the accounts: a check
    for tests and operators, not for requests."""
    queryset = Account.objects.all() if queryset is None else queryset
    maintained = {a.pk: tuple(getattr(a, s) for s in SUMS) for a in with_balance_sums(queryset.order_by())}
    aggregated = {a.pk: tuple(getattr(a, s) for s in SUMS) for a in with_aggregated_sums(queryset.order_by())}
    return {pk: {"maintained": maintained[pk], "aggregated": aggregated[pk]}
            for pk in aggregated if aggregated[pk] != maintained[pk]}


def balance_totals_rebuild() -> int:
    """Recomputes every account's totals from its entries (repair after a trigger was disabled). Blocks entry
    writes meanwhile. Returns the number of accounts written."""
    entry, balance = Entry._meta.db_table, AccountBalance._meta.db_table
    with transaction.atomic(), connections["default"].cursor() as cursor:
        cursor.execute(f"LOCK TABLE {entry} IN SHARE ROW EXCLUSIVE MODE")
        cursor.execute(f"""
            INSERT INTO {balance} AS b (account_id, posted_debits, posted_credits, pending_debits, pending_credits,
                                        updated_at)
            SELECT a.account_id,
                   coalesce(sum(e.amount) FILTER (WHERE e.status = 'POSTED' AND e.entry_type = 'DEBIT'), 0),
                   coalesce(sum(e.amount) FILTER (WHERE e.status = 'POSTED' AND e.entry_type = 'CREDIT'), 0),
                   coalesce(sum(e.amount) FILTER (WHERE e.entry_type = 'DEBIT'), 0),
                   coalesce(sum(e.amount) FILTER (WHERE e.entry_type = 'CREDIT'), 0),
                   now()
            FROM {Account._meta.db_table} a
            LEFT JOIN {entry} e ON e.account_id = a.account_id AND e.status IN ('POSTED', 'EXPECTED')
            GROUP BY a.account_id
            ORDER BY a.account_id
            ON CONFLICT (account_id) DO UPDATE SET posted_debits = EXCLUDED.posted_debits,
                posted_credits = EXCLUDED.posted_credits, pending_debits = EXCLUDED.pending_debits,
                pending_credits = EXCLUDED.pending_credits, updated_at = EXCLUDED.updated_at""")
        return cursor.rowcount


def posted_balance_on(account: Account, day) -> Decimal:
    """The account's posted balance counting the POSTED entries dated up to the end of `day` (UTC), as the
    ledger knows them now: what a bank statement closing that day is compared with."""
    import datetime as dt

    end = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
    sums = Entry.objects.filter(account=account, status=EntryStatus.POSTED, effective_date__lt=end).aggregate(
        debits=Coalesce(Sum("amount", filter=Q(entry_type="DEBIT")), ZERO),
        credits=Coalesce(Sum("amount", filter=Q(entry_type="CREDIT")), ZERO))
    up, down = ((sums["debits"], sums["credits"]) if account.account_type == AccountType.DEBIT_NORMAL
                else (sums["credits"], sums["debits"]))
    return account.initial_balance + up - down
