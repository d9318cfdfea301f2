-- Every column that references a row whose deletion must find its referrers gets an index:
-- without one, deleting a message (or a chat's messages, or an account) scans these tables
-- once per deleted row.
CREATE INDEX messages_reply_to ON messages (reply_to_id);
CREATE INDEX chat_events_actor ON chat_events (actor_id);
CREATE INDEX chat_events_user ON chat_events (user_id);
CREATE INDEX message_reactions_user ON message_reactions (user_id);
CREATE INDEX message_pins_pinned_by ON message_pins (pinned_by);
