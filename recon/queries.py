"""The recon app's raw SQL, one named and commented statement each (the ORM writes everything else).

Columns are always listed by name. Parameters are named (`%(name)s`); arrays go as one text parameter each
(`tracker.bulk.array_literal`) cast to their type, so a statement's text is the same for every batch size.
Table names come from the models."""

from recon.models import Entry, StagingEntry, Transaction

_TABLES = {
    "staging": StagingEntry._meta.db_table,
    "transaction": Transaction._meta.db_table,
    "entry": Entry._meta.db_table,
}

# -- engine_plan --
# Before a batch's statements, in its transaction: sequential scans and hash joins off for that transaction (returns
# the previous settings, restored after the batch with ENGINE_PLAN_RESTORE). Every statement of the engine reads or
# writes rows by their ids (an array parameter), so the right plan is always an index lookup per id. Right after a
# bulk load the tables are younger than their statistics (10,000 transactions counted as 1,400): the planner then
# hashed a full scan of recon_transaction for the moves and new versions and scanned all of recon_entry for the
# legs, a cost that grows with the ledger, not the batch (docs/benchmarks.md, "Where a batch's time goes").
ENGINE_PLAN = """
SELECT current_setting('enable_seqscan'), current_setting('enable_hashjoin'),
       set_config('enable_seqscan', 'off', true), set_config('enable_hashjoin', 'off', true)
"""

# -- engine_plan_restore --
# After the batch: the settings ENGINE_PLAN read (`seqscan`, `hashjoin`).
ENGINE_PLAN_RESTORE = """
SELECT set_config('enable_seqscan', %(seqscan)s, true), set_config('enable_hashjoin', %(hashjoin)s, true)
"""

# -- transactions_move --
# Moves transactions to a new state, each only from the state it was decided from (`from_status`); the caller
# compares the row count with the number of ids (a row that changed under its lock is a bug, not an outcome).
TRANSACTIONS_MOVE = """
UPDATE {transaction} AS t SET status = u.to_status
FROM unnest(%(ids)s::uuid[], %(from_status)s::text[], %(to_status)s::text[]) AS u(id, from_status, to_status)
WHERE t.transaction_id = u.id AND t.status = u.from_status
""".format(**_TABLES)

# -- versions_insert --
# The next version of each fulfilled transaction (POSTED, or EXPECTED after an instalment that leaves a
# remainder), copied from its old row in the database; `extra` (the amount difference a tolerance accepted, the
# match group, what an instalment paid) is added to the metadata.
VERSIONS_INSERT = """
INSERT INTO {transaction} (transaction_id, logical_transaction_id, version, status, amount, currency, merchant_id,
                           rule_id, source_staging_entry_id, metadata, group_value, created_at)
SELECT u.id, t.logical_transaction_id, t.version + 1, u.status, t.amount, t.currency, t.merchant_id, t.rule_id,
       u.staging, t.metadata || u.extra::jsonb, t.group_value, %(now)s
FROM unnest(%(ids)s::uuid[], %(old)s::uuid[], %(staging)s::uuid[], %(statuses)s::text[], %(extra)s::text[])
     AS u(id, old, staging, status, extra)
JOIN {transaction} AS t ON t.transaction_id = u.old
""".format(**_TABLES)

# -- legs_write --
# The fulfilled versions' legs, in one statement: the old versions' live legs (`archived`) become ARCHIVED, and the
# new versions' legs are inserted: the carried-over legs copied from their old rows (the statement's snapshot still
# sees them as they were), then each staging entry's own leg (and its difference or remainder leg, whose account,
# side and amount are given; a payout member's own leg has its own amount) from the staging row; POSTED unless a
# status is given (an instalment's EXPECTED remainder). Returns (legs archived, legs inserted) for the caller to
# check. One statement, so the running-balance triggers of both changes run at its end, back to back: the balance
# rows they lock (held until commit) are taken as late as possible.
LEGS_WRITE = """
WITH archived AS (
    UPDATE {entry} SET status = %(archived_status)s
    WHERE entry_id = ANY(%(archived)s::uuid[])
    RETURNING 1
), inserted AS (
    INSERT INTO {entry} (entry_id, transaction_id, account_id, entry_type, amount, currency, status, effective_date,
                         metadata, created_at)
    SELECT c.id, c.txn, e.account_id, e.entry_type, e.amount, e.currency, %(status)s, e.effective_date, e.metadata,
           %(now)s
    FROM unnest(%(carried_ids)s::uuid[], %(carried_txns)s::uuid[], %(carried_old)s::uuid[]) AS c(id, txn, old)
    JOIN {entry} AS e ON e.entry_id = c.old
    UNION ALL
    SELECT o.id, o.txn, coalesce(o.account, s.account_id), coalesce(o.side, s.entry_type),
           coalesce(o.amount, s.amount), s.currency, coalesce(o.status, %(status)s), s.effective_date,
           o.metadata::jsonb, %(now)s
    FROM unnest(%(own_ids)s::uuid[], %(own_txns)s::uuid[], %(own_staging)s::uuid[], %(own_accounts)s::uuid[],
                %(own_sides)s::text[], %(own_amounts)s::numeric[], %(own_metadata)s::text[], %(own_statuses)s::text[])
         AS o(id, txn, staging, account, side, amount, metadata, status)
    JOIN {staging} AS s ON s.staging_entry_id = o.staging
    RETURNING 1
)
SELECT (SELECT count(*) FROM archived), (SELECT count(*) FROM inserted)
""".format(**_TABLES)

# -- staging_outcomes_update --
# Each staging entry's outcome (status, metadata, discarded_at, the transaction it put in MISMATCH), only from
# the state it was decided from.
STAGING_OUTCOMES_UPDATE = """
UPDATE {staging} AS s
SET status = u.to_status, metadata = u.metadata::jsonb, discarded_at = u.discarded_at,
    mismatch_transaction_id = u.mismatch, updated_at = %(now)s
FROM unnest(%(ids)s::uuid[], %(from_status)s::text[], %(to_status)s::text[], %(metadata)s::text[],
            %(discarded_at)s::timestamptz[], %(mismatch)s::uuid[])
     AS u(id, from_status, to_status, metadata, discarded_at, mismatch)
WHERE s.staging_entry_id = u.id AND s.status = u.from_status
""".format(**_TABLES)

# -- waiting_confirmations_lock --
# Confirmations in review because nothing matched them (NoMatchFoundError) whose match-key value is one of the
# (account, key, value, pattern) rows whose expectation has just appeared; locked in id order. jsonb equality, as
# `metadata__key=value`, or, with a rule's confirmation_key_pattern, its group's match (PostgreSQL's `substring`
# reads the pattern as a POSIX regular expression: the reprocessed entry is decided again by the engine).
WAITING_CONFIRMATIONS_LOCK = """
SELECT s.staging_entry_id, s.account_id, s.metadata
FROM {staging} AS s
WHERE s.account_id = ANY(%(accounts)s::uuid[]) AND s.status = %(status)s AND s.processing_mode = %(mode)s
  AND s.metadata ->> 'error_type' = %(error_type)s
  AND EXISTS (SELECT 1 FROM unnest(%(w_accounts)s::uuid[], %(w_keys)s::text[], %(w_values)s::jsonb[],
                                   %(w_patterns)s::text[]) AS w(account_id, k, v, pattern)
              WHERE s.account_id = w.account_id
                AND CASE WHEN w.pattern IS NULL THEN s.metadata -> w.k = w.v
                         ELSE substring(s.metadata ->> w.k FROM w.pattern) = w.v #>> '{{}}' END)
ORDER BY s.staging_entry_id
FOR UPDATE
""".format(**_TABLES)

# -- The CSV import's COPY path (`recon.services.staging_entries_create_rows`) --
# Rows are COPYed into a temporary table (ON COMMIT DROP, dropped again after each chunk so one transaction can
# write several chunks), then inserted from it; the tracker inserts each row's task from the same table
# (`tracker.services.task_insert_from_table` reads its task_id and payload columns).
STAGING_COPY_TABLE = "recon_staging_copy"
STAGING_COPY_COLUMNS = (
    "staging_entry_id",
    "task_id",
    "entry_type",
    "amount",
    "currency",
    "effective_date",
    "processing_mode",
    "metadata",
    "payload",
)
# The same columns in the order of `staging_entries_create_copy_text`'s lines: what is added per row first, then the
# row's own COPY text as the statement spool holds it.
STAGING_COPY_TEXT_COLUMNS = (
    "staging_entry_id",
    "task_id",
    "processing_mode",
    "payload",
    "entry_type",
    "amount",
    "currency",
    "effective_date",
    "metadata",
)

# -- staging_copy_create --
STAGING_COPY_CREATE = f"""
DROP TABLE IF EXISTS pg_temp.{STAGING_COPY_TABLE};
CREATE TEMPORARY TABLE {STAGING_COPY_TABLE} (
    staging_entry_id uuid NOT NULL, task_id uuid NOT NULL, entry_type text NOT NULL, amount numeric NOT NULL,
    currency text NOT NULL, effective_date timestamptz NOT NULL, processing_mode text NOT NULL, metadata jsonb NOT NULL,
    payload jsonb NOT NULL
) ON COMMIT DROP
"""

# -- staging_copy_drop --
STAGING_COPY_DROP = f"DROP TABLE {STAGING_COPY_TABLE}"

# Every column of a staging entry inserted from the COPY table, with its value (INSERT ... SELECT applies no Django
# defaults); tests/recon/test_ingest_copy.py checks it covers the model's concrete fields.
STAGING_FROM_COPY_VALUES = {
    "staging_entry_id": "c.staging_entry_id",
    "account_id": "%(account_id)s",
    "entry_type": "c.entry_type",
    "amount": "c.amount",
    "currency": "c.currency",
    "effective_date": "c.effective_date",
    "processing_mode": "c.processing_mode",
    "status": "%(status)s",
    "metadata": "c.metadata",
    "idempotency_key": "NULL",
    "request_hash": "''",
    "task_id": "c.task_id",
    "mismatch_transaction_id": "NULL",
    "created_at": "%(now)s",
    "updated_at": "%(now)s",
    "discarded_at": "NULL",
}

# -- staging_entries_from_copy --
# The entries of the COPY table; a row whose id is already there is skipped. Columns and values pair by name
# (STAGING_FROM_COPY_VALUES).
STAGING_ENTRIES_FROM_COPY = f"""
INSERT INTO {_TABLES["staging"]} ({", ".join(STAGING_FROM_COPY_VALUES)})
SELECT {", ".join(STAGING_FROM_COPY_VALUES.values())} FROM {STAGING_COPY_TABLE} AS c
ON CONFLICT DO NOTHING
"""

# -- staging_copy_skipped_delete --
# After a skipped row (the count fell short): drop the COPY rows whose entry exists with another task, so no task
# is created for them (the caller then inserts the tasks with a conflict check: a row written again keeps its task).
STAGING_COPY_SKIPPED_DELETE = f"""
DELETE FROM {STAGING_COPY_TABLE} AS c
WHERE NOT EXISTS (SELECT 1 FROM {_TABLES["staging"]} AS s
                  WHERE s.staging_entry_id = c.staging_entry_id AND s.task_id = c.task_id)
"""
