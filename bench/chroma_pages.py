#!/usr/bin/env python3
"""What one page of a whole-source read costs in a large collection.

The daemon reads a whole source page by page (`limit` 1,000 and an
`offset`): the S3 listing comparison reads every chunk of the source
(`source_id`), the filesystem and web re-syncs every first chunk
(`source_id` and `chunk_index` 0). This times one page of each, at a few
offsets, in a collection that already holds a large source — the one a
`bench/memory.py` gigabyte run fills, while it runs (its Chroma is stopped
with it).

Usage: bench/chroma_pages.py CHROMA_PORT [DATABASE [COLLECTION]]
       (default database `bench`, collection `memory-s3-1000`)
Each figure is the fastest of three reads.
"""

import sys
import time

import chromadb  # the test venv's


def main(port, database="bench", name="memory-s3-1000"):
    collection = chromadb.HttpClient(host="127.0.0.1", port=int(port),
                                     database=database).get_collection(name)
    source = collection.get(limit=1, include=["metadatas"])["metadatas"][0]["source_id"]
    print(f"{collection.count()} records; source {source}")

    def page(where, offset, label):
        times = []
        for _ in range(3):
            start = time.time()
            found = collection.get(where=where, limit=1000, offset=offset, include=["metadatas"])
            times.append(time.time() - start)
        print(f"{label:32s} offset {offset:7d}: {min(times) * 1000:8.1f} ms, "
              f"{len(found['ids'])} records", flush=True)

    for offset in (0, 10000):
        page({"$and": [{"source_id": source}, {"chunk_index": 0}]}, offset,
             "source and chunk_index 0")
        page({"chunk_index": 0}, offset, "chunk_index 0 alone")
    for offset in (0, 50000, 150000):
        page({"source_id": source}, offset, "source")


if __name__ == "__main__":
    main(*sys.argv[1:])
