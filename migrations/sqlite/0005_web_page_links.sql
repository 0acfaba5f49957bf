-- What a web crawl remembers of each page it fetched: the validators it
-- answered with, the version the crawl computed, why it is not stored (a
-- canonical copy, noindex) if so, and its outgoing links (a JSON array of
-- normalised in-scope URLs, bounded by the crawler). A page answering
-- 304 Not Modified to these validators is followed through these links.
-- Rows are replaced on each fetch of the page and deleted with the page
-- and with the source.
CREATE TABLE web_page_links (
    source_id     TEXT   NOT NULL,
    page_url      TEXT   NOT NULL,
    etag          TEXT,
    last_modified TEXT,
    version       TEXT   NOT NULL,
    skip_reason   TEXT,
    links         TEXT   NOT NULL,
    recorded_at   BIGINT NOT NULL,
    PRIMARY KEY (source_id, page_url)
);
