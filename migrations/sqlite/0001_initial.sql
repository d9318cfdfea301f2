-- Accounts, chats, messages and the two kinds of credentials.
-- Timestamps are RFC 3339 text in UTC; AUTOINCREMENT keeps ids from ever being reused,
-- which message cursors rely on.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL UNIQUE,
    email         TEXT    NOT NULL DEFAULT '',
    password_hash TEXT    NOT NULL,
    user_type     TEXT    NOT NULL DEFAULT 'student' CHECK (user_type IN ('owner', 'student', 'staff')),
    first_name    TEXT    NOT NULL DEFAULT '',
    last_name     TEXT    NOT NULL DEFAULT '',
    is_staff      INTEGER NOT NULL DEFAULT 0 CHECK (is_staff IN (0, 1)),
    is_superuser  INTEGER NOT NULL DEFAULT 0 CHECK (is_superuser IN (0, 1)),
    is_active     INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    date_joined   TEXT    NOT NULL,
    last_login    TEXT
);

CREATE TABLE chats (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL,
    owner_id   INTEGER REFERENCES users (id) ON DELETE SET NULL,
    created_at TEXT    NOT NULL,
    -- Highest message sequence number handed out in this chat.
    last_seq   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX chats_owner ON chats (owner_id);

CREATE TABLE chat_participants (
    chat_id   INTEGER NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at TEXT    NOT NULL,
    PRIMARY KEY (chat_id, user_id)
);
-- "Which chats is this user in?"
CREATE INDEX chat_participants_user_chat ON chat_participants (user_id, chat_id);

CREATE TABLE messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id    INTEGER NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    sender_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    content    TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    UNIQUE (chat_id, seq)
);
-- Cursor pages within a chat walk (chat_id, id).
CREATE INDEX messages_chat_id ON messages (chat_id, id);
CREATE INDEX messages_sender ON messages (sender_id);

CREATE TABLE sessions (
    -- SHA-256 of the cookie value: a leaked table does not leak live sessions.
    key_hash   TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    expires_at TEXT    NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   TEXT    NOT NULL UNIQUE,
    name         TEXT    NOT NULL DEFAULT '',
    created_at   TEXT    NOT NULL,
    last_used_at TEXT
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);
