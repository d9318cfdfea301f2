-- Mentions: the members a message names as @username, resolved when it is written (and again
-- when it is edited). The message keeps their ids for rendering ("3,17", ascending; NULL for
-- none); this table answers "what mentions me" and the unread mention counts.
ALTER TABLE messages ADD COLUMN mentions TEXT NULL;
CREATE TABLE message_mentions (
    message_id BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    chat_id    BIGINT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    -- The message's position, so unread mentions are a range read per chat.
    seq        BIGINT NOT NULL,
    PRIMARY KEY (message_id, user_id)
);
-- Unread mentions per chat: a range read by position.
CREATE INDEX message_mentions_user ON message_mentions (user_id, chat_id, seq);
-- GET /api/mentions/: a user's mentions by message id.
CREATE INDEX message_mentions_user_message ON message_mentions (user_id, message_id);
-- An edit's event keeps the mentions of its content, as the message does.
ALTER TABLE chat_events ADD COLUMN mentions TEXT NULL;

-- Read receipts: when on, each move of a member's read position is logged (kind read_receipt,
-- read_seq the position now read), so every member sees who has read up to where.
ALTER TABLE chats ADD COLUMN read_receipts BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE chat_events ADD COLUMN read_seq BIGINT NULL;
