-- Conversations become trees: each AI message answers or follows its parent (NULL for a first
-- question), and `active` marks the branch the chat shows and the model is sent. Existing
-- conversations are one branch: each message follows the one before it.
ALTER TABLE ai_messages ADD COLUMN parent_id BIGINT NULL REFERENCES ai_messages(id) ON DELETE CASCADE;
ALTER TABLE ai_messages ADD COLUMN active BOOLEAN NOT NULL DEFAULT TRUE;
UPDATE ai_messages m SET parent_id = (
    SELECT MAX(p.id) FROM ai_messages p
    WHERE p.ai_chat_id = m.ai_chat_id AND p.id < m.id
);
CREATE INDEX ai_messages_parent ON ai_messages (parent_id);
-- The model an AI chat asks, as `provider/model` (NULL: the server's default model).
ALTER TABLE ai_chats ADD COLUMN model TEXT NULL;
