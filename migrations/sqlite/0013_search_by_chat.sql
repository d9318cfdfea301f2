-- Full-text search by chat: the index also holds each message's chat, as one token (`c42`) in a
-- column of its own, so a search limited to a few chats intersects the query's matches with
-- those chats' messages inside the index (skipping through a frequent word's long list) instead
-- of reading every match and dropping those of other chats.
--
-- The index reads its text from this view (external content); the triggers write the same
-- values.
DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_delete;
DROP TRIGGER messages_fts_update;
DROP TABLE messages_fts;

CREATE VIEW messages_fts_source AS
    SELECT id, content, 'c' || chat_id AS chat FROM messages;

CREATE VIRTUAL TABLE messages_fts USING fts5(
    content,
    chat,
    content = 'messages_fts_source',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '2 3'
);

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, content, chat) VALUES (new.id, new.content, 'c' || new.chat_id);
END;

CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content, chat)
        VALUES ('delete', old.id, old.content, 'c' || old.chat_id);
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content, chat)
        VALUES ('delete', old.id, old.content, 'c' || old.chat_id);
    INSERT INTO messages_fts (rowid, content, chat) VALUES (new.id, new.content, 'c' || new.chat_id);
END;

INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
