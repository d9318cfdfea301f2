-- Each chat's ordered log. A message's creation is the message row itself (its seq is its
-- position); every other change to a chat is a row of chat_events at the next position of the
-- same counter (chats.last_seq), written in the same transaction as the change.
ALTER TABLE messages ADD COLUMN edited_at TEXT NULL;
-- A deleted message stays as a tombstone (no content) so positions and replies stay coherent.
ALTER TABLE messages ADD COLUMN deleted_at TEXT NULL;

-- The earlier versions of edited messages, for the chat's owner and staff.
CREATE TABLE message_versions (
    id          INTEGER PRIMARY KEY,
    message_id  INTEGER      NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    content     TEXT        NOT NULL,
    -- When this version was written (the message's creation, or an earlier edit).
    written_at  TEXT NOT NULL,
    -- When the edit that replaced it was made.
    replaced_at TEXT NOT NULL
);
CREATE INDEX message_versions_message ON message_versions (message_id, id);

CREATE TABLE chat_events (
    chat_id    INTEGER      NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    seq        INTEGER      NOT NULL,
    -- message_edited, message_deleted, …
    kind       TEXT NOT NULL,
    -- The message the event is about, if any.
    message_id INTEGER      NULL REFERENCES messages (id) ON DELETE CASCADE,
    -- Who made the change.
    actor_id   INTEGER      NULL REFERENCES users (id) ON DELETE SET NULL,
    -- The text the event carries (an edit's new content); cleared when its message is deleted.
    content    TEXT        NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (chat_id, seq)
);
CREATE INDEX chat_events_message ON chat_events (message_id);
