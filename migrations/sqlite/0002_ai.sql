-- AI conversations: a user's private chats with a language model, and token accounting.

CREATE TABLE ai_chats (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    related_chat_id INTEGER REFERENCES chats (id) ON DELETE SET NULL,
    title           TEXT    NOT NULL,
    system_prompt   TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL
);
-- The owner's list, newest-updated first.
CREATE INDEX ai_chats_user_updated ON ai_chats (user_id, updated_at, id);
CREATE INDEX ai_chats_related ON ai_chats (related_chat_id);

CREATE TABLE ai_messages (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    ai_chat_id        INTEGER NOT NULL REFERENCES ai_chats (id) ON DELETE CASCADE,
    role              TEXT    NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    content           TEXT    NOT NULL,
    created_at        TEXT    NOT NULL,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    total_tokens      INTEGER,
    model             TEXT,
    -- stop, length, cancelled, error, interrupted; NULL for user messages.
    finish_reason     TEXT,
    -- FALSE while the reply is being generated: such rows are not listed yet.
    complete          INTEGER NOT NULL DEFAULT 1 CHECK (complete IN (0, 1))
);
CREATE INDEX ai_messages_chat_id ON ai_messages (ai_chat_id, id);

-- One row per generation; kept when the conversation is deleted, so accounting survives.
CREATE TABLE ai_usage (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id           INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    model             TEXT    NOT NULL,
    day               TEXT    NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_tokens      INTEGER NOT NULL,
    created_at        TEXT    NOT NULL
);
CREATE INDEX ai_usage_user_day ON ai_usage (user_id, day);
CREATE INDEX ai_usage_day ON ai_usage (day);
