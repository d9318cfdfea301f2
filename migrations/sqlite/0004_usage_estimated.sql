-- Token counts the server worked out itself (the provider reported none: a reply cancelled or cut
-- short, or a provider that does not count streamed replies) are marked as estimates.
ALTER TABLE ai_messages ADD COLUMN usage_estimated INTEGER NOT NULL DEFAULT 0 CHECK (usage_estimated IN (0, 1));
ALTER TABLE ai_usage ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0 CHECK (estimated IN (0, 1));
