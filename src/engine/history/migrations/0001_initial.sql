-- feedhandler history schema, version 1. One dialect for SQLite and PostgreSQL: BIGINT, TEXT, primary keys,
-- no server-side defaults that differ. Prices are fixed-point integers in 1e-9 units (the engine's), times
-- int64 nanoseconds since the epoch, seq the journal sequence number of the input (per shard).

-- how far the writer got: the last journal sequence whose rows are all stored, per shard journal
CREATE TABLE history_position (
    shard        INTEGER PRIMARY KEY,
    seq          BIGINT NOT NULL,
    updated_ns   BIGINT NOT NULL
);

-- the accounts (users) the exchange has seen, with the input that first named them
CREATE TABLE accounts (
    account      TEXT PRIMARY KEY,
    shard        INTEGER NOT NULL,
    first_seq    BIGINT NOT NULL,
    first_ns     BIGINT NOT NULL
);

-- every order with its current state (status: NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED, REJECTED)
CREATE TABLE orders (
    order_id        BIGINT PRIMARY KEY,
    symbol          TEXT NOT NULL,
    account         TEXT NOT NULL,
    side            TEXT NOT NULL,
    price           BIGINT NOT NULL,
    qty             BIGINT NOT NULL,
    leaves_qty      BIGINT NOT NULL,
    cum_qty         BIGINT NOT NULL,
    status          TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    reason          TEXT NOT NULL,
    shard           INTEGER NOT NULL,
    created_seq     BIGINT NOT NULL,
    updated_seq     BIGINT NOT NULL,
    created_ns      BIGINT NOT NULL,
    updated_ns      BIGINT NOT NULL
);
CREATE INDEX orders_account ON orders (account, status);
CREATE INDEX orders_symbol ON orders (symbol, status);

-- every engine event (each status change of each order), in journal order: (shard, seq, n) is the n-th
-- event of input seq of that shard, so a row can never be stored twice
CREATE TABLE order_events (
    shard           INTEGER NOT NULL,
    seq             BIGINT NOT NULL,
    n               INTEGER NOT NULL,
    type            TEXT NOT NULL,
    order_id        BIGINT NOT NULL,
    symbol          TEXT NOT NULL,
    account         TEXT NOT NULL,
    side            TEXT NOT NULL,
    price           BIGINT NOT NULL,
    qty             BIGINT NOT NULL,
    leaves_qty      BIGINT NOT NULL,
    cum_qty         BIGINT NOT NULL,
    status          TEXT NOT NULL,
    trade_id        BIGINT NOT NULL,
    liquidity       TEXT NOT NULL,
    reason          TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    ts_event        BIGINT NOT NULL,
    PRIMARY KEY (shard, seq, n)
);
CREATE INDEX order_events_order ON order_events (order_id);

-- one row per trade (from the taker's fill)
CREATE TABLE trades (
    trade_id        BIGINT PRIMARY KEY,
    symbol          TEXT NOT NULL,
    price           BIGINT NOT NULL,
    qty             BIGINT NOT NULL,
    aggressor_side  TEXT NOT NULL,
    buy_order_id    BIGINT NOT NULL,
    sell_order_id   BIGINT NOT NULL,
    buyer           TEXT NOT NULL,
    seller          TEXT NOT NULL,
    shard           INTEGER NOT NULL,
    seq             BIGINT NOT NULL,
    ts_event        BIGINT NOT NULL
);
CREATE INDEX trades_symbol ON trades (symbol, ts_event);

-- position change of each side of each fill: qty signed (+ bought, - sold) at price; the cash change is
-- -qty * price (kept as the two integers: their product can pass 64 bits)
CREATE TABLE position_changes (
    trade_id        BIGINT NOT NULL,
    order_id        BIGINT NOT NULL,
    account         TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    qty             BIGINT NOT NULL,
    price           BIGINT NOT NULL,
    shard           INTEGER NOT NULL,
    seq             BIGINT NOT NULL,
    ts_event        BIGINT NOT NULL,
    PRIMARY KEY (trade_id, order_id)
);
CREATE INDEX position_changes_account ON position_changes (account, symbol);
