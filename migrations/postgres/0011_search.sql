-- Full-text search over message content. The `simple` configuration (no stemming, so every
-- language is searched alike) with unaccent in front of it, so case and diacritics never
-- matter. unaccent is a trusted extension: the database's owner may create it.
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE TEXT SEARCH CONFIGURATION mrm_search (COPY = pg_catalog.simple);
ALTER TEXT SEARCH CONFIGURATION mrm_search
    ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part, numword,
        hword_numpart, numhword
    WITH unaccent, simple;

-- The index column, computed by the database on every write of the content. Punctuation is
-- turned into spaces first, so that an address or a URL is indexed as its words, as SQLite's
-- tokenizer splits them (the default parser would keep `bob@example.com` as one token).
ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('mrm_search'::regconfig, regexp_replace(content, '[[:punct:]]+', ' ', 'g'))
) STORED;
CREATE INDEX messages_search ON messages USING gin (search);
