-- Conversations become trees: each AI message answers or follows its parent (NULL for a first
-- question), and `active` marks the branch the chat shows and the model is sent. Existing
-- conversations are one branch: each message follows the complete one before it (a reply left
-- unfinished by a stopped process is nobody's parent, so removing it removes nothing else).
ALTER TABLE ai_messages ADD COLUMN parent_id INTEGER NULL REFERENCES ai_messages(id) ON DELETE CASCADE;
ALTER TABLE ai_messages ADD COLUMN active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1));
UPDATE ai_messages SET parent_id = (
    SELECT MAX(p.id) FROM ai_messages p
    WHERE p.ai_chat_id = ai_messages.ai_chat_id AND p.id < ai_messages.id AND p.complete
);
CREATE INDEX ai_messages_parent ON ai_messages (parent_id);
-- Replies being written, which nodes look through for those a stopped node left.
CREATE INDEX ai_messages_unfinished ON ai_messages (id) WHERE complete = FALSE;
-- The model an AI chat asks, as `provider/model` (NULL: the server's default model).
ALTER TABLE ai_chats ADD COLUMN model TEXT NULL;
