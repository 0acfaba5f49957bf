#!/usr/bin/env python3
"""What does a per-document lookup cost the real Chroma server as the
collection grows? (issue 33)

A fresh local server (`chroma run`, the test venv's); one collection filled,
in upserts of 500, with generated 3.3 KB records carrying the daemon's
metadata (ten chunks per document, all of one source). At each size in
SIZES the lookups a sync makes per document are timed, 20 of each:

- `and(source,key)`: `{"$and": [{"source_id": …}, {"document_key": …}]}`,
  what the daemon asked before `Filter` split its conditions;
- `and(key,source)`: the same, the other way round;
- `key`: `{"document_key": …}`, what it asks now (the source is checked on
  the answer);
- `and(key,version)`: a document at a version, as asked now;
- `sha_in_10`: `content_sha256 $in` ten hashes (the vector-reuse lookup);
- `upsert_10`: one document's ten chunks written.

Prints milliseconds per lookup at each size.

Usage: bench/chroma_lookup.py [SIZE ...]   (default: 2000 10000 30000 60000)
"""

import hashlib
import os
import random
import shutil
import sys
import tempfile
import time

import chromadb

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402  (cpu_model, free_port)

SOURCE = "source-1"


def metadata(document, index, text):
    return {"source_id": SOURCE, "source_type": "s3", "document_key": f"docs/d{document}.md",
            "version_key": f"etag{document}", "chunk_index": index,
            "content_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "embedding_model": "hashed-384"}


def main(sizes):
    print(e2e.cpu_model(), flush=True)
    work = tempfile.mkdtemp(prefix="chroma-lookup-")
    port = e2e.free_port()
    server = e2e.start_chroma(os.path.join(work, "chroma"), port)
    try:
        e2e.wait_http(f"http://127.0.0.1:{port}/api/v2/heartbeat")
        client = chromadb.HttpClient(port=port)
        collection = client.create_collection("lookup")
        rng = random.Random(1)
        words = [hashlib.md5(str(i).encode()).hexdigest()[:7] for i in range(5000)]

        def text():
            return " ".join(rng.choice(words) for _ in range(410))

        written = 0
        for size in sizes:
            while written < size:
                ids, texts, metadatas = [], [], []
                for k in range(500):
                    record = written + k
                    body = text()
                    ids.append(f"id{record // 10}-{record % 10}")
                    texts.append(body)
                    metadatas.append(metadata(record // 10, record % 10, body))
                collection.upsert(ids=ids, documents=texts, metadatas=metadatas,
                                  embeddings=[[rng.random() for _ in range(384)] for _ in ids])
                written += 500
            key = f"docs/d{size // 20}.md"

            def timed(lookup, repeats=20):
                start = time.time()
                for _ in range(repeats):
                    lookup()
                return round((time.time() - start) / repeats * 1000, 1)

            hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(10)]
            result = {
                "and(source,key)": timed(lambda: collection.get(
                    where={"$and": [{"source_id": SOURCE}, {"document_key": key}]},
                    include=["metadatas"])),
                "and(key,source)": timed(lambda: collection.get(
                    where={"$and": [{"document_key": key}, {"source_id": SOURCE}]},
                    include=["metadatas"])),
                "key": timed(lambda: collection.get(
                    where={"document_key": key}, include=["metadatas"])),
                "and(key,version)": timed(lambda: collection.get(
                    where={"$and": [{"document_key": key}, {"version_key": "etag1"}]},
                    include=["metadatas"])),
                "sha_in_10": timed(lambda: collection.get(
                    where={"content_sha256": {"$in": hashes}},
                    include=["metadatas", "embeddings"])),
            }
            start = time.time()
            for repeat in range(10):
                bodies = [text() for _ in range(10)]
                collection.upsert(
                    ids=[f"new{size}-{repeat}-{i}" for i in range(10)], documents=bodies,
                    metadatas=[metadata(10**7 + repeat, i, b) for i, b in enumerate(bodies)],
                    embeddings=[[rng.random() for _ in range(384)] for _ in range(10)])
            result["upsert_10"] = round((time.time() - start) / 10 * 1000, 1)
            print(size, result, flush=True)
    finally:
        server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main([int(size) for size in sys.argv[1:]] or [2000, 10000, 30000, 60000])
