-- Full-text search over message content. The `simple` configuration (no stemming, so every
-- language is searched alike) with unaccent in front of it, so case and diacritics never
-- matter. unaccent is a trusted extension: the database's owner may create it.
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE TEXT SEARCH CONFIGURATION mrm_search (COPY = pg_catalog.simple);
ALTER TEXT SEARCH CONFIGURATION mrm_search
    ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part, numword,
        hword_numpart, numhword
    WITH unaccent, simple;

-- The index column, computed by the database on every write of the content. The text is put in
-- NFC first (so a letter typed as a letter and a combining accent is one letter), then
-- punctuation and symbols become spaces, so that an address or a URL is indexed as its words,
-- as SQLite's tokenizer splits them (the default parser would keep `bob@example.com` as one
-- token). The ranges name the Unicode blocks of punctuation and symbols explicitly, because
-- [[:punct:]] covers only ASCII in a database whose locale is C.
ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('mrm_search'::regconfig, regexp_replace(normalize(content, NFC),
        '[[:punct:]\u00a1-\u00bf\u00d7\u00f7\u2000-\u206f\u20a0-\u20cf\u2100-\u214f\u2190-\u2bff\u2e00-\u2e7f\u3000-\u303f\ufe30-\ufe4f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65\U0001f000-\U0001faff]+',
        ' ', 'g'))
) STORED;
-- New entries wait in the index's pending list until a vacuum (or the list's limit) merges
-- them, and every search scans that list: a small limit keeps searches fast between merges.
CREATE INDEX messages_search ON messages USING gin (search) WITH (gin_pending_list_limit = 256);
