-- A user's own AI token budgets, overriding MRM_AI_DAILY_TOKENS and MRM_AI_MONTHLY_TOKENS
-- (NULL: the default).
ALTER TABLE users ADD COLUMN ai_daily_tokens BIGINT NULL;
ALTER TABLE users ADD COLUMN ai_monthly_tokens BIGINT NULL;
