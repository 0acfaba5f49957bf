#!/usr/bin/env python3
"""What one page of a whole-source read costs in a large collection.

Chroma has no cursor: the daemon reads many records page by page (a `get`
with `limit` and `offset`), and the local server evaluates the `where` over
every record it meets on each page. This times one page of each read the
daemon makes, by filter, page size and offset, and a read of documents by
key (`document_key` `$in` a batch of keys), in a collection that holds a
large source.

Usage:
  bench/chroma_pages.py --fill DOCS
      starts its own Chroma (the test venv's) in a temporary directory and
      fills a collection with DOCS documents of 10 chunks each, carrying the
      metadata an S3 source writes (a tenth of them another source's), then
      times the reads; the figures `config::DEFAULT_READ_PAGE_SIZE` and
      `pipeline::listing::KEYS_PER_READ` were chosen by.
  bench/chroma_pages.py CHROMA_PORT [DATABASE [COLLECTION]]
      the same reads against a running Chroma that holds a large source —
      the one a `bench/memory.py` gigabyte run fills, while it runs
      (default database `bench`, collection `memory-s3-1000`).

Each figure is the fastest of three reads.
"""

import hashlib
import os
import random
import shutil
import sys
import tempfile
import time

import chromadb  # the test venv's

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import free_port, start_chroma, wait_http  # noqa: E402

CHUNKS_PER_DOC = 10
SOURCE = "11111111-2222-3333-4444-555555555555"
OTHER = "99999999-2222-3333-4444-555555555555"


def key_of(doc):
    return f"docs/dir{doc // 100}/file{doc}.md"


def fill(collection, docs):
    """DOCS documents of 10 chunks with an S3 source's metadata; every
    tenth another source's. Two-dimensional vectors: what a `get` costs
    does not depend on them, and they make the fill quick."""
    rng = random.Random(7)
    batch = {"ids": [], "metadatas": [], "embeddings": [], "documents": []}
    start = time.time()
    for doc in range(docs):
        key = key_of(doc)
        digest = hashlib.sha256(key.encode()).hexdigest()
        for index in range(CHUNKS_PER_DOC):
            batch["ids"].append(f"{digest}-{index}")
            batch["metadatas"].append({
                "source_id": OTHER if doc % 10 == 0 else SOURCE, "source_type": "s3",
                "document_key": key, "document_key_sha256": digest, "chunk_index": index,
                "version_key": f'"{digest[:32]}"', "version_key_sha256": digest,
                "content_sha256": hashlib.sha256(f"{key}{index}".encode()).hexdigest(),
                "chunk_strategy": "markdown", "start_line": index * 10, "end_line": index * 10 + 9,
                "embedding_model": "all-MiniLM-L6-v2", "bucket": "corpus",
            })
            batch["embeddings"].append([rng.random(), rng.random()])
            batch["documents"].append(f"chunk {index} of document {doc}")
        if len(batch["ids"]) >= 5000:
            collection.add(**batch)
            batch = {name: [] for name in batch}
    if batch["ids"]:
        collection.add(**batch)
    print(f"filled {collection.count()} records in {time.time() - start:.0f} s", flush=True)


def reads(collection, source, keys):
    """Times each read the daemon makes."""
    def page(label, where, limit, offset=0, include=("metadatas",)):
        times = []
        try:
            for _ in range(3):
                start = time.time()
                found = collection.get(where=where, limit=limit, offset=offset, include=list(include))
                times.append(time.time() - start)
        except Exception as error:  # Chroma refuses some pages outright
            print(f"{label:34s} limit {limit:6d} offset {offset:7d}: refused: {str(error)[:80]}", flush=True)
            return
        count = len(found["ids"])
        print(f"{label:34s} limit {limit:6d} offset {offset:7d}: {min(times) * 1000:8.1f} ms, "
              f"{count:6d} records, {min(times) * 1e6 / max(count, 1):7.1f} us a record", flush=True)

    firsts = {"$and": [{"source_id": source}, {"chunk_index": 0}]}
    for limit in (1000, 10000, 20000, 50000):
        page("source", {"source_id": source}, limit)
        page("source, ids only", {"source_id": source}, limit, include=())
        page("source and chunk_index 0", firsts, limit)
        page("chunk_index 0 alone", {"chunk_index": 0}, limit)
    for offset in (10000, 100000):
        page("source", {"source_id": source}, 10000, offset)
    middle = len(keys) // 2
    for count in (10, 100, 300, 1000):
        batch = keys[middle:middle + count]
        page(f"document_key $in {count} keys", {"document_key": {"$in": batch}},
             max(1000, count * CHUNKS_PER_DOC * 2))


def filled(docs):
    work = tempfile.mkdtemp(prefix="chroma-syncd-pages-")
    port = free_port()
    server = start_chroma(os.path.join(work, "chroma"), port)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/v2/heartbeat")
        collection = chromadb.HttpClient(host="127.0.0.1", port=port).create_collection("pages")
        fill(collection, docs)
        reads(collection, SOURCE, [key_of(doc) for doc in range(docs) if doc % 10])
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


def running(port, database="bench", name="memory-s3-1000"):
    collection = chromadb.HttpClient(host="127.0.0.1", port=int(port),
                                     database=database).get_collection(name)
    sample = collection.get(limit=2000, include=["metadatas"])["metadatas"]
    source = sample[0]["source_id"]
    keys = sorted({m["document_key"] for m in sample if m["source_id"] == source})
    print(f"{collection.count()} records; source {source}")
    reads(collection, source, keys)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--fill":
        filled(int(sys.argv[2]))
    elif len(sys.argv) >= 2 and not sys.argv[1].startswith("-"):
        running(*sys.argv[1:])
    else:
        sys.exit(__doc__)
