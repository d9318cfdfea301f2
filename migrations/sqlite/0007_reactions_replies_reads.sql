-- The user a membership event is about (added, removed, left, made owner).
ALTER TABLE chat_events ADD COLUMN user_id INTEGER NULL REFERENCES users (id) ON DELETE SET NULL;

-- One reaction per user per emoji per message.
CREATE TABLE message_reactions (
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    emoji      TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    PRIMARY KEY (message_id, user_id, emoji)
);

-- The message a message replies to, in the same chat.
ALTER TABLE messages ADD COLUMN reply_to_id INTEGER NULL REFERENCES messages (id) ON DELETE SET NULL;

-- How far each member has read: the highest position they marked read.
ALTER TABLE chat_participants ADD COLUMN last_read_seq INTEGER NOT NULL DEFAULT 0;
