-- One durable store for what source kinds remember between syncs, in place
-- of a table (and queue methods) per kind: values under keys, in namespaces
-- the kind names (`web.page`, `s3.meta_json.file`, …). What each value holds
-- is the kind's business (see its folder); rows go with their source.
--
-- Numbered 0009 in both dialects so their numbering agrees from here on
-- (SQLite has no 0008).
CREATE TABLE source_state (
    source_id  TEXT   NOT NULL,
    namespace  TEXT   NOT NULL,
    key        TEXT   NOT NULL,
    value      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (source_id, namespace, key)
);

-- A web crawl's memory of each page: the page's URL → its validators,
-- version, skip reason and links (JSON, as `web/links.rs` reads it).
INSERT INTO source_state (source_id, namespace, key, value, updated_at)
SELECT source_id, 'web.page', page_url,
       json_object('etag', etag, 'last_modified', last_modified, 'version', version,
                   'skip_reason', skip_reason, 'links', json(links)),
       recorded_at
FROM web_page_links;

-- What `.meta.json` files synced, both ways round. Keys are their parts,
-- each written `<length in characters>:<text>` (`s3/meta_json.rs`), so no
-- text can pass for another split.
INSERT INTO source_state (source_id, namespace, key, value, updated_at)
SELECT source_id, 's3.meta_json.file',
       length(meta_key) || ':' || meta_key || length(collection_name) || ':' || collection_name
           || length(custom_id) || ':' || custom_id,
       object_key, updated_at
FROM meta_json_documents;
INSERT INTO source_state (source_id, namespace, key, value, updated_at)
SELECT source_id, 's3.meta_json.document',
       length(collection_name) || ':' || collection_name || length(custom_id) || ':' || custom_id
           || length(meta_key) || ':' || meta_key,
       '', updated_at
FROM meta_json_documents;

DROP TABLE web_page_links;
DROP INDEX meta_json_documents_document;
DROP TABLE meta_json_documents;
