-- A reply records how many earlier messages of its conversation were left out of its prompt to
-- fit the model's context window (NULL: none).
ALTER TABLE ai_messages ADD COLUMN omitted_messages INTEGER NULL;
