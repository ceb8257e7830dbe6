"""The reconciliation engine in three steps: `load` (lock and read a batch), `decide` (pure functions: the
outcomes, no database access), `write` (the one writer). `recon.engine` runs them; everything that processes a
staging entry (a worker's batch, one task, an operator's forced match) goes through it."""
