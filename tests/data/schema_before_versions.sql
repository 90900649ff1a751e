-- The schema as agent/storage/database.py created it before migrations were versioned (commit 4e40ced).
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    person_id TEXT NOT NULL,  -- whose turn it is: "forget me" removes them from shared group scopes too
    role TEXT NOT NULL CHECK (role IN ('human', 'ai')),
    content TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS history_scope ON history (scope, id);
CREATE INDEX IF NOT EXISTS history_created ON history (created_at);
CREATE INDEX IF NOT EXISTS history_person ON history (person_id);

-- One row per accepted msgId: the dedupe key, and the message itself until it is answered.
CREATE TABLE IF NOT EXISTS inbox (
    msg_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('processing', 'done', 'failed')),
    received_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    person_id TEXT,
    payload TEXT,  -- the parsed message (JSON) while unanswered; cleared once the reply is stored
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS inbox_updated ON inbox (updated_at);
CREATE INDEX IF NOT EXISTS inbox_state ON inbox (state, received_at);

-- Replies (and proactive notices) stored before they are sent; marked sent on errcode 0.

CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    msg_id TEXT,  -- the message answered; NULL for a proactive notice
    part INTEGER NOT NULL,
    channel TEXT NOT NULL CHECK (channel IN ('reply', 'robot')),
    person_id TEXT,
    body TEXT,  -- the webhook JSON body; cleared once sent
    route TEXT,  -- where it goes (JSON; holds the session webhook, a credential); cleared once sent
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'skipped')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (msg_id, part)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_updated ON outbox (updated_at);

CREATE TABLE IF NOT EXISTS memory_sharing (
    person_id TEXT PRIMARY KEY,
    shared INTEGER NOT NULL
);

-- Messages answered whose facts are not learned yet: stored with the reply, gone once learned (a crash
-- in between is resumed at the next start), erased by "/forget all".
CREATE TABLE IF NOT EXISTS learning (
    msg_id TEXT PRIMARY KEY,
    person_id TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at REAL NOT NULL
);

-- The last "/forget all" of each person (when they sent it): anything said before it is never written.
CREATE TABLE IF NOT EXISTS forgotten (
    person_id TEXT PRIMARY KEY,
    at REAL NOT NULL
);

-- One row, rewritten by the probe that says whether the database can be written again after a fault.
CREATE TABLE IF NOT EXISTS storage_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at REAL NOT NULL,
    room BLOB
);
