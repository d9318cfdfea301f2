-- api_tokens.last_used_at was never written or read.
ALTER TABLE api_tokens DROP COLUMN last_used_at;
