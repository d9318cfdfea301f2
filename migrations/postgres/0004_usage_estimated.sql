-- Token counts the server worked out itself (the provider reported none: a reply cancelled or cut
-- short, or a provider that does not count streamed replies) are marked as estimates.
ALTER TABLE ai_messages ADD COLUMN usage_estimated BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE ai_usage ADD COLUMN estimated BOOLEAN NOT NULL DEFAULT FALSE;
