-- The documents `.meta.json` files of S3 sources have synced: one row per
-- (source, metadata file, collection, custom id). A removed `.meta.json`
-- arrives as an event without a body, so this is how its job learns which
-- document (custom id) in which collection to delete. A row is written
-- before its document's first chunk and removed only after its chunks are
-- gone, so a crash at any point leaves nothing unreachable.
CREATE TABLE meta_json_documents (
    source_id       TEXT   NOT NULL,
    meta_key        TEXT   NOT NULL,
    collection_name TEXT   NOT NULL,
    custom_id       TEXT   NOT NULL,
    object_key      TEXT   NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (source_id, meta_key, collection_name, custom_id)
);
-- Other metadata files naming the same document (it stays while one does).
CREATE INDEX meta_json_documents_document
    ON meta_json_documents (source_id, collection_name, custom_id);
