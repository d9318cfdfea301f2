-- Full-text search over message content: an FTS5 index whose content is the messages table
-- itself (external content, so the text is stored once), kept in step by triggers on every
-- write of a message's content (a send, an edit, a deletion's emptying, a chat's deletion).
-- unicode61 folds case in any script and, with remove_diacritics 2, Latin diacritics; the prefix
-- indexes make `wo*` a lookup rather than a scan.
CREATE VIRTUAL TABLE messages_fts USING fts5(
    content,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '2 3'
);

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;

CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;

-- Messages written before this migration.
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
