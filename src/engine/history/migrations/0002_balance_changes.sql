-- feedhandler history schema, version 2: balance changes (engine.accounts, when [accounts] is enabled).
-- One row per (account, asset) changed by one input: the change of the available and of the locked amount
-- (d_available, d_locked: additive, so their sums per (account, asset) are the balances whatever order the
-- shards' rows were written in) and the amounts after the input as the writer computed them (exact with one
-- shard; with several, in the writer's order of the shards' inputs). cause: deposit, withdraw or order.
-- Amounts are the engine's integers (the quote asset in 1e-9 units of price x qty, base assets in qty).
CREATE TABLE balance_changes (
    shard        INTEGER NOT NULL,
    seq          BIGINT NOT NULL,
    account      TEXT NOT NULL,
    asset        TEXT NOT NULL,
    d_available  BIGINT NOT NULL,
    d_locked     BIGINT NOT NULL,
    available    BIGINT NOT NULL,
    locked       BIGINT NOT NULL,
    cause        TEXT NOT NULL,
    PRIMARY KEY (shard, seq, account, asset)
);
CREATE INDEX balance_changes_account ON balance_changes (account, asset);
