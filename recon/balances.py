"""Account balances computed by the database (shared/API.md, "Accounts"). ARCHIVED entries never count."""

from decimal import Decimal

from django.db.models import DecimalField, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from recon.models import Account, AccountType, Entry, EntryStatus

ZERO = Value(Decimal("0"), output_field=DecimalField(max_digits=20, decimal_places=4))


def _sum(side: str, statuses: tuple[str, ...]):
    sub = (Entry.objects.filter(account=OuterRef("pk"), entry_type=side, status__in=statuses)
           .order_by().values("account").annotate(s=Sum("amount")).values("s"))
    return Coalesce(Subquery(sub, output_field=DecimalField(max_digits=24, decimal_places=4)), ZERO)


def with_balance_sums(queryset: QuerySet[Account]) -> QuerySet[Account]:
    """Annotates posted/pending debit and credit sums (one query for any number of accounts)."""
    posted = (EntryStatus.POSTED,)
    pending = (EntryStatus.POSTED, EntryStatus.EXPECTED)
    return queryset.annotate(posted_debits=_sum("DEBIT", posted), posted_credits=_sum("CREDIT", posted),
                             pending_debits=_sum("DEBIT", pending), pending_credits=_sum("CREDIT", pending))


def balances_of(account: Account) -> dict:
    """{"posted_balance", "pending_balance", "available_balance"} as Decimals. Uses the annotations of
    `with_balance_sums` when present, else queries them."""
    if not hasattr(account, "posted_debits"):
        account = with_balance_sums(Account.objects.filter(pk=account.pk)).get()
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
