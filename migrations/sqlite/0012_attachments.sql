-- Attachments. The bytes live in the object store, once per content (content-addressed by
-- SHA-256): `blobs` has one row per stored object, `attachments` one row per upload, first
-- unattached (message_id NULL), then bound to the message that carries it.
CREATE TABLE blobs (
    -- SHA-256 of the content, lower-case hex: the object's name in the store.
    digest       TEXT    PRIMARY KEY,
    size         INTEGER NOT NULL,
    -- Decided from the bytes, never from the client.
    content_type TEXT    NOT NULL,
    -- Pixels, for images the server can decode.
    width        INTEGER NULL,
    height       INTEGER NULL,
    -- The content type of the thumbnail object stored beside it, if there is one.
    thumbnail    TEXT    NULL,
    -- Set when an attachment of it goes (or an upload of it begins): the sweeper checks
    -- whether anything still holds it.
    released     INTEGER NOT NULL DEFAULT 0 CHECK (released IN (0, 1)),
    -- While a sweeper removes its objects: until when it may (its lease; past it another
    -- sweeper takes over), and which sweeper it is. Uploads of the same content wait.
    deleting_until TEXT        NULL,
    deleting_by    TEXT        NULL
);
CREATE INDEX blobs_released ON blobs (digest) WHERE released = TRUE;

-- Uploads in progress, each holding its blob (and the object it is writing) until it is
-- recorded or `until` passes, whatever becomes of it.
CREATE TABLE blob_holds (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    digest TEXT    NOT NULL REFERENCES blobs (digest) ON DELETE CASCADE,
    until  TEXT    NOT NULL
);
CREATE INDEX blob_holds_digest ON blob_holds (digest, until);
-- Holds whose upload never finished, for the sweeper.
CREATE INDEX blob_holds_until ON blob_holds (until);

CREATE TABLE attachments (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id     INTEGER NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    uploader_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    message_id  INTEGER NULL REFERENCES messages (id) ON DELETE CASCADE,
    -- Its place among the message's attachments, from 0.
    ordinal     INTEGER NULL,
    digest      TEXT    NOT NULL REFERENCES blobs (digest),
    -- The file name as sanitised at upload.
    name        TEXT    NOT NULL,
    -- The blob's size, kept here so a user's usage is one index read.
    size        INTEGER NOT NULL,
    created_at  TEXT    NOT NULL
);
CREATE INDEX attachments_message ON attachments (message_id, ordinal);
CREATE INDEX attachments_digest ON attachments (digest);
CREATE INDEX attachments_chat ON attachments (chat_id);
-- Storage used per user: summed from the index alone.
CREATE INDEX attachments_uploader ON attachments (uploader_id, size);
-- Uploads never attached, oldest first, for the sweeper.
CREATE INDEX attachments_unattached ON attachments (created_at) WHERE message_id IS NULL;

-- However an attachment goes (its message deleted, its chat, its uploader, the sweeper), its
-- blob becomes a candidate for removal.
CREATE TRIGGER attachments_release AFTER DELETE ON attachments BEGIN
    UPDATE blobs SET released = 1 WHERE digest = OLD.digest;
END;

-- A message's attachments as its views show them (JSON, in order; NULL for none): written
-- once, with the message, so rendering a page reads no other table.
ALTER TABLE messages ADD COLUMN attachments TEXT NULL;

-- A user's storage quota in bytes, overriding MRM_STORAGE_QUOTA_BYTES.
ALTER TABLE users ADD COLUMN storage_quota INTEGER NULL;
