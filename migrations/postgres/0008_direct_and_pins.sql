-- Direct chats: the one chat between two users is marked by the pair's ids, "low:high"
-- (a user's chat with themself is "id:id"). The unique index makes two requests racing to
-- create the same pair's chat end with one chat. Group chats have none.
ALTER TABLE chats ADD COLUMN direct_key VARCHAR(41) NULL;
CREATE UNIQUE INDEX chats_direct_key ON chats (direct_key);

-- Pinned messages: at most one pin per message. seq is the position of the message_pinned
-- event in the chat's log, so the newest pin is the one with the highest seq.
CREATE TABLE message_pins (
    message_id BIGINT      NOT NULL PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    chat_id    BIGINT      NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    seq        BIGINT      NOT NULL,
    -- Who pinned it; NULL once their account is deleted.
    pinned_by  BIGINT      NULL REFERENCES users (id) ON DELETE SET NULL,
    pinned_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX message_pins_chat ON message_pins (chat_id, seq);
