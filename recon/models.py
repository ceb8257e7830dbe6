"""Reconciliation data: merchants and their users, accounts, recon rules, staging entries and the ledger
(transactions in versions, entries), plus closed periods. State changes go through the FSM transitions below
(audited by tracker.audit) or set-based updates in recon.services/engine that write the same audit rows."""

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Collate
from django.utils import timezone
from django_fsm import FSMField, FSMModelMixin, transition

from tracker.ids import uuid7

MONEY = {"max_digits": 20, "decimal_places": 4}
# The smallest amount a money column holds (10 ** -decimal_places): amounts are quantized to it.
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY["decimal_places"])


class AccountType(models.TextChoices):
    DEBIT_NORMAL = "DEBIT_NORMAL"
    CREDIT_NORMAL = "CREDIT_NORMAL"


class Side(models.TextChoices):
    DEBIT = "DEBIT"
    CREDIT = "CREDIT"


def opposite(side: str) -> str:
    return Side.CREDIT if side == Side.DEBIT else Side.DEBIT


class ProcessingMode(models.TextChoices):
    TRANSACTION = "TRANSACTION"
    CONFIRMATION = "CONFIRMATION"


class StagingStatus(models.TextChoices):
    PENDING = "PENDING"
    PROCESSED = "PROCESSED"
    NEEDS_MANUAL_REVIEW = "NEEDS_MANUAL_REVIEW"
    ARCHIVED = "ARCHIVED"


class TransactionStatus(models.TextChoices):
    EXPECTED = "EXPECTED"
    POSTED = "POSTED"
    MISMATCH = "MISMATCH"
    ARCHIVED = "ARCHIVED"


class EntryStatus(models.TextChoices):
    EXPECTED = "EXPECTED"
    POSTED = "POSTED"
    ARCHIVED = "ARCHIVED"


class MatchMode(models.TextChoices):
    """How a rule's confirmations settle its expectations (docs/recon.md, "Grouped matching")."""

    ONE_TO_ONE = "one_to_one"
    ONE_TO_MANY = "one_to_many"  # one confirmation (a payout) settles every open expectation of its group
    MANY_TO_ONE = "many_to_one"  # several confirmations (instalments) settle one expectation


class Role(models.TextChoices):
    VIEWER = "viewer"
    OPERATOR = "operator"


class Merchant(models.Model):
    merchant_id = models.CharField(max_length=64, primary_key=True)
    merchant_name = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["merchant_id"]

    def __str__(self):
        return f"{self.merchant_name} ({self.merchant_id})"


class MerchantMembership(models.Model):
    """Links a user to a merchant with a role (viewer: read-only; operator: may change data)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="merchant_memberships")
    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "merchant"], name="recon_membership_unique")]

    def __str__(self):
        return f"{self.user} @ {self.merchant_id} ({self.role})"


class Account(models.Model):
    account_id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="accounts")
    account_name = models.CharField(max_length=200)
    account_type = models.CharField(max_length=16, choices=AccountType.choices)
    currency = models.CharField(max_length=3)
    initial_balance = models.DecimalField(default=0, **MONEY)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "account_id"]

    def __str__(self):
        return f"{self.account_name} ({self.currency})"


class ReconRule(models.Model):
    """account_one -> account_two, with matching options. One rule per account_one."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="recon_rules")
    account_one = models.OneToOneField(Account, on_delete=models.PROTECT, related_name="rule_as_one")
    account_two = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="rules_as_two")
    match_key = models.CharField(max_length=100, default="order_id")
    amount_tolerance = models.DecimalField(default=0, **MONEY)
    amount_tolerance_pct = models.DecimalField(max_digits=9, decimal_places=4, default=0)
    date_window_days = models.PositiveIntegerField(null=True, blank=True)
    difference_account = models.ForeignKey(
        Account, null=True, blank=True, on_delete=models.PROTECT, related_name="rules_as_difference"
    )
    confirmation_key = models.CharField(
        max_length=100,
        blank=True,
        default="",
        help_text="The confirmations' metadata field of the key (empty: match_key).",
    )
    confirmation_key_pattern = models.CharField(
        max_length=500,
        blank=True,
        default="",
        help_text="A regular expression with one group: the key is the "
        "group's first match in the confirmation's field.",
    )
    match_mode = models.CharField(max_length=16, choices=MatchMode.choices, default=MatchMode.ONE_TO_ONE)
    group_key = models.CharField(
        max_length=100,
        blank=True,
        default="",
        help_text="one_to_many: the expectations' metadata field a group shares.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["account_one", "account_two"], name="recon_rule_pair_unique"),
            models.CheckConstraint(condition=~Q(account_one=models.F("account_two")), name="recon_rule_distinct"),
            models.CheckConstraint(
                condition=Q(amount_tolerance__gte=0) & Q(amount_tolerance_pct__gte=0),
                name="recon_rule_tolerance_nonneg",
            ),
        ]

    def __str__(self):
        return f"{self.account_one.account_name} -> {self.account_two.account_name} ({self.match_key})"


class MetadataValues(models.Func):
    """The values of a JSON object as a JSON array, `jsonb_path_query_array(metadata, '$.*')`: an immutable
    expression, indexed (GIN, jsonb_path_ops) for the review queue's search by any metadata value."""

    function = "jsonb_path_query_array"
    template = "%(function)s(%(expressions)s, '$.*')"
    output_field = models.JSONField()


class StagingEntry(FSMModelMixin, models.Model):
    staging_entry_id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="staging_entries", db_index=False
    )  # the prefix of recon_staging_account_status
    entry_type = models.CharField(max_length=6, choices=Side.choices)
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3)
    effective_date = models.DateTimeField()
    processing_mode = models.CharField(max_length=16, choices=ProcessingMode.choices)
    status = FSMField(max_length=24, choices=StagingStatus.choices, default=StagingStatus.PENDING, protected=True)
    metadata = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    request_hash = models.CharField(max_length=64, blank=True, default="")
    task_id = models.UUIDField(null=True, blank=True)  # recon_staging_pending_task (partial)
    mismatch_transaction = models.ForeignKey(
        "Transaction",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # recon_staging_mismatch_txn
        help_text="The transaction this entry put in MISMATCH.",
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    discarded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "staging entries"
        ordering = ["-created_at", "staging_entry_id"]
        permissions = [("write_off", "Can book a forced match's difference as a write-off")]
        # Also (migration 0005, raw SQL): recon_staging_meta_values, a GIN index (jsonb_path_ops) on
        # MetadataValues(metadata), for the review queue's search by any metadata value.
        # Status changes are non-HOT updates: every non-partial index costs an insertion per transition.
        indexes = [
            models.Index(fields=["account", "status"], name="recon_staging_account_status"),
            # The only lookups by task_id: PENDING entries whose task FAILED or was CANCELLED (reports, admin);
            # everything else goes from the entry to its task.
            models.Index(fields=["task_id"], name="recon_staging_pending_task", condition=Q(status="PENDING")),
            # The review queue (few rows: written only when an entry goes to review), newest first.
            models.Index(
                fields=["-created_at"], name="recon_staging_review", condition=Q(status="NEEDS_MANUAL_REVIEW")
            ),
            # Few entries have one; serves SET_NULL when a transaction is deleted.
            models.Index(
                fields=["mismatch_transaction"],
                name="recon_staging_mismatch_txn",
                condition=Q(mismatch_transaction__isnull=False),
            ),
            # Statement lines only (CSV rows have no line_key): the overlap check of statement imports, one index
            # descent per key of a chunk (recon.ingest.STATEMENT_LINE_COUNTS). The keys are hex digests: collation
            # "C" compares them bytewise, and the query names the same collation so it can use the index. The key
            # alone (the query filters the account in the rows found), so no plan can fall onto the account's index.
            models.Index(
                Collate(KeyTextTransform("line_key", "metadata"), "C"),
                name="recon_staging_line_key",
                condition=Q(metadata__has_key="line_key"),
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="recon_staging_amount_positive"),
            models.UniqueConstraint(
                fields=["account", "idempotency_key"],
                name="recon_staging_idempotency",
                condition=Q(idempotency_key__isnull=False),
            ),
        ]

    def __str__(self):
        from recon.formatting import entry_label

        return (
            f"{entry_label(key=(self.metadata or {}).get('order_id'), amount=self.amount, currency=self.currency)}"
            f" [{self.status}]"
        )

    @property
    def merchant_id(self) -> str:
        return self.account.merchant_id

    # Transitions: `by` (a user or worker id) and `reason` are recorded by tracker.audit.
    @transition(field=status, source=StagingStatus.PENDING, target=StagingStatus.PROCESSED, custom={"admin": False})
    def mark_processed(self, by=None, reason="processed"):
        self.discarded_at = timezone.now()

    @transition(
        field=status, source=StagingStatus.PENDING, target=StagingStatus.NEEDS_MANUAL_REVIEW, custom={"admin": False}
    )
    def send_to_review(self, by=None, reason="needs manual review"):
        pass

    @transition(
        field=status, source=StagingStatus.NEEDS_MANUAL_REVIEW, target=StagingStatus.PROCESSED, custom={"admin": False}
    )
    def resolve_match(self, by=None, reason="matched by operator"):
        self.discarded_at = timezone.now()

    def in_review_queue(self) -> bool:
        """In review, or PENDING while its task FAILED or was CANCELLED (`recon.selectors`)."""
        from recon.selectors import staging_entry_in_review_queue

        return staging_entry_in_review_queue(self)

    @transition(
        field=status,
        source=[StagingStatus.NEEDS_MANUAL_REVIEW, StagingStatus.PENDING],
        target=StagingStatus.ARCHIVED,
        conditions=[in_review_queue],
        custom={"admin": True, "label": "Ignore"},
    )
    def ignore(self, by=None, reason="ignored"):
        self.discarded_at = timezone.now()

    # From PENDING too when its task FAILED or was CANCELLED: a new task (the engine's writer follows this).
    @transition(
        field=status,
        source=[StagingStatus.NEEDS_MANUAL_REVIEW, StagingStatus.PENDING],
        target=StagingStatus.PENDING,
        conditions=[in_review_queue],
        custom={"admin": True, "label": "Reprocess"},
    )
    def reprocess(self, by=None, reason="reprocess"):
        pass


class Transaction(FSMModelMixin, models.Model):
    transaction_id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    logical_transaction_id = models.CharField(max_length=255)
    version = models.PositiveIntegerField(default=1)
    status = FSMField(
        max_length=16, choices=TransactionStatus.choices, default=TransactionStatus.EXPECTED, protected=True
    )
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3)
    merchant = models.ForeignKey(
        Merchant, on_delete=models.PROTECT, related_name="transactions", db_index=False
    )  # the prefix of recon_txn_merchant_status
    rule = models.ForeignKey(ReconRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    source_staging_entry = models.ForeignKey(
        StagingEntry,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="created_transactions",
        db_index=False,  # recon_txn_one_version_per_staging (unique)
        help_text="The staging entry whose processing created this version.",
    )
    metadata = models.JSONField(default=dict, blank=True)
    group_value = models.CharField(
        max_length=255,
        null=True,
        blank=True,
        help_text="one_to_many rules: the expectation's group_key value (as text), by which a payout finds its group.",
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "transaction_id"]
        indexes = [
            models.Index(fields=["merchant", "status"], name="recon_txn_merchant_status"),
            # A payout's group: the open expectations of a one_to_many rule with one group_key value.
            models.Index(
                fields=["rule", "group_value"],
                name="recon_txn_open_group",
                condition=Q(status="EXPECTED", group_value__isnull=False),
            ),
            models.Index(
                KeyTextTransform("match_group", "metadata"),
                name="recon_txn_match_group",
                condition=Q(metadata__has_key="match_group"),
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="recon_txn_amount_positive"),
            models.UniqueConstraint(fields=["logical_transaction_id", "version"], name="recon_txn_version_unique"),
            models.UniqueConstraint(
                fields=["logical_transaction_id"], name="recon_txn_one_open_version", condition=~Q(status="ARCHIVED")
            ),
            # One version per transaction a staging entry settles (a payout settles many).
            models.UniqueConstraint(
                fields=["source_staging_entry", "logical_transaction_id"],
                name="recon_txn_one_version_per_staging",
                condition=Q(source_staging_entry__isnull=False),
            ),
        ]

    def __str__(self):
        return f"{self.logical_transaction_id} v{self.version} [{self.status}]"

    @transition(
        field=status,
        source=[TransactionStatus.EXPECTED, TransactionStatus.MISMATCH, TransactionStatus.POSTED],
        target=TransactionStatus.ARCHIVED,
        custom={"admin": False},
    )
    def archive(self, by=None, reason="superseded"):
        pass

    @transition(
        field=status, source=TransactionStatus.EXPECTED, target=TransactionStatus.MISMATCH, custom={"admin": False}
    )
    def mark_mismatch(self, by=None, reason="mismatch"):
        pass

    @transition(
        field=status, source=TransactionStatus.MISMATCH, target=TransactionStatus.EXPECTED, custom={"admin": False}
    )
    def reopen(self, by=None, reason="reopened"):
        pass


class Entry(FSMModelMixin, models.Model):
    entry_id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    transaction = models.ForeignKey(Transaction, on_delete=models.PROTECT, related_name="entries")
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="entries", db_index=False
    )  # the prefix of recon_entry_account_status/_date
    entry_type = models.CharField(max_length=6, choices=Side.choices)
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3)
    status = FSMField(max_length=16, choices=EntryStatus.choices, protected=True)
    effective_date = models.DateTimeField()
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "entries"
        ordering = ["-effective_date", "entry_id"]
        indexes = [
            models.Index(fields=["account", "status"], name="recon_entry_account_status"),
            models.Index(fields=["account", "-effective_date"], name="recon_entry_account_date"),
        ]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="recon_entry_amount_positive")]

    def __str__(self):
        return f"{self.entry_type} {self.amount} {self.currency} [{self.status}]"

    @transition(
        field=status,
        source=[EntryStatus.EXPECTED, EntryStatus.POSTED],
        target=EntryStatus.ARCHIVED,
        custom={"admin": False},
    )
    def archive(self, by=None, reason="superseded"):
        pass


class ClosedPeriod(models.Model):
    """A date range of a merchant's books that is closed: nothing new is posted into it while it is
    closed (`reopened_at` is null)."""

    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="closed_periods")
    start_date = models.DateField()
    end_date = models.DateField()
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    closed_at = models.DateTimeField(default=timezone.now)
    reopened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reopened_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-start_date"]
        constraints = [
            models.CheckConstraint(condition=Q(end_date__gte=models.F("start_date")), name="recon_period_range")
        ]

    def __str__(self):
        state = "reopened" if self.reopened_at else "closed"
        return f"{self.merchant_id} {self.start_date}..{self.end_date} ({state})"


class Upload(models.Model):
    """An uploaded CSV file, stored in the database (in `UploadChunk`s of about 1 MB) so every worker on every
    machine can read it. `sha256` detects the same content uploaded twice to the same account."""

    upload_id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="uploads")
    name = models.CharField(max_length=255)
    size = models.BigIntegerField(default=0, help_text="Bytes.")
    sha256 = models.CharField(max_length=64, blank=True, default="", db_index=True)
    line_count = models.BigIntegerField(default=0, help_text="Newlines in the file (progress estimate).")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["account", "sha256"], name="recon_upload_account_sha")]

    def __str__(self):
        return f"{self.name} ({self.size} bytes)"


class UploadChunk(models.Model):
    """One piece of an upload's bytes, in order of `seq`."""

    id = models.BigAutoField(primary_key=True)
    upload = models.ForeignKey(Upload, on_delete=models.CASCADE, related_name="chunks")
    seq = models.PositiveIntegerField()
    data = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["upload", "seq"], name="recon_upload_chunk_seq")]


TOTAL = {"max_digits": 24, "decimal_places": 4, "default": 0}


class AccountBalance(models.Model):
    """Running totals of an account's entries (shared/API.md, "Accounts"), maintained on PostgreSQL by
    statement-level triggers on the entry table (migration 0003): every INSERT/UPDATE/DELETE statement adds its
    net delta per account with one upsert. Posted counts POSTED entries, pending counts POSTED+EXPECTED,
    ARCHIVED never counts. A missing row means zero. Written only by the triggers; read by recon.balances."""

    account = models.OneToOneField(Account, primary_key=True, on_delete=models.CASCADE, related_name="balance_totals")
    posted_debits = models.DecimalField(**TOTAL)
    posted_credits = models.DecimalField(**TOTAL)
    pending_debits = models.DecimalField(**TOTAL)
    pending_credits = models.DecimalField(**TOTAL)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "recon_account_balance"

    def __str__(self):
        return f"balance totals of {self.account_id}"


class BankStatement(models.Model):
    """One statement (or report) of an imported bank file, with the bank's figures, and what did not add up:
    `problems` lists `lines_do_not_add_up` (lines != closing - opening), `opening_differs` (opening balance is not
    the previous statement's closing balance) and `sequence_gap` (a statement number is missing in between)."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="statements")
    upload = models.ForeignKey(Upload, on_delete=models.PROTECT, related_name="statements")
    format = models.CharField(max_length=16)
    statement_id = models.CharField(max_length=200)
    bank_account = models.CharField(
        max_length=100, blank=True, default="", help_text="The account as the file names it."
    )
    sequence = models.CharField(max_length=64, blank=True, default="")
    currency = models.CharField(max_length=3, blank=True, default="")
    opening_balance = models.DecimalField(max_digits=24, decimal_places=4, null=True, blank=True)
    closing_balance = models.DecimalField(max_digits=24, decimal_places=4, null=True, blank=True)
    opening_date = models.DateField(null=True, blank=True)
    closing_date = models.DateField(null=True, blank=True)
    line_count = models.PositiveIntegerField(default=0)
    lines_total = models.DecimalField(max_digits=24, decimal_places=4, default=0)
    problems = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-closing_date", "-created_at"]
        indexes = [models.Index(fields=["account", "bank_account", "closing_date"], name="recon_stmt_account_close")]

    def __str__(self):
        return f"{self.statement_id} ({self.closing_date or '?'})"
