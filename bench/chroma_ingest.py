#!/usr/bin/env python3
"""How fast does the real Chroma server take records, by batch size? (issue 33)

The memory benchmark's gigabyte is paced by Chroma, not by the daemon. This
measures Chroma alone, in one run: a fresh local server (`chroma run`, the
test venv's) per batch size, each upserting the same number of generated
3.3 KB documents with random 384-dimension vectors, a batch at a time, as
the daemon does per document (BATCHES, default `10,100`: a ~33 KB document's
chunks, or a hundred of them). Prints records per second for each, the
ratio to the first, and the rate over each 10,000 records written (how it
falls as the collection grows); one server runs at a time.

Usage: bench/chroma_ingest.py [RECORDS]   (default 12000)
"""

import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time

import chromadb

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402  (cpu_model, free_port)


def ingest(batch, total, work):
    path = os.path.join(work, f"chroma-{batch}")
    port = e2e.free_port()
    server = e2e.start_chroma(path, port)
    try:
        e2e.wait_http(f"http://127.0.0.1:{port}/api/v2/heartbeat")
        client = chromadb.HttpClient(port=port)
        collection = client.create_collection(f"ingest-{batch}")
        rng = random.Random(1)
        words = [hashlib.md5(str(i).encode()).hexdigest()[:7] for i in range(5000)]
        start, written = time.time(), 0
        last, stretches = start, []
        while written < total:
            ids = [f"r{written + i}" for i in range(batch)]
            texts = [" ".join(rng.choice(words) for _ in range(410)) for _ in range(batch)]
            vectors = [[rng.random() for _ in range(384)] for _ in range(batch)]
            metadatas = [{"document_key": f"d{written // 10}", "chunk_index": i}
                         for i in range(batch)]
            collection.upsert(ids=ids, documents=texts, embeddings=vectors, metadatas=metadatas)
            written += batch
            if written % 10000 == 0:
                now = time.time()
                stretches.append(round(10000 / (now - last), 1))
                last = now
        return written / (time.time() - start), stretches
    finally:
        server.kill()
        shutil.rmtree(path, ignore_errors=True)


def main(args):
    total = int(args[0]) if args else 12000
    batches = [int(b) for b in os.environ.get("BATCHES", "10,100").split(",")]
    work = tempfile.mkdtemp(prefix="chroma-ingest-")
    try:
        measured = {batch: ingest(batch, total, work) for batch in batches}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rates = {batch: rate for batch, (rate, _) in measured.items()}
    first = rates[batches[0]]
    print(json.dumps({"cpu": e2e.cpu_model(), "records": total, "records_per_second": {
        str(b): round(r, 1) for b, r in rates.items()},
        "over_first": {str(b): round(r / first, 2) for b, r in rates.items()},
        # How the pace changes as the collection grows: records/s over each
        # 10,000 written (batch sizes that divide 10,000).
        "per_10000": {str(b): stretches for b, (_, stretches) in measured.items()}}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
