#!/usr/bin/env python3
"""The Python peer: the same job as `chroma-syncd run` on an S3 prefix, done
the way people write it today — boto3 + langchain-text-splitters +
sentence-transformers (all-MiniLM-L6-v2, offline, from the model directory)
+ the chromadb client. Called by bench/e2e.py, in the bench venv
(~/.cache/chroma-syncd/bench-venv: sentence-transformers, torch,
langchain-text-splitters, boto3, chromadb).

Usage: peer.py S3_ENDPOINT BUCKET CHROMA_PORT COLLECTION MODEL_DIR
Prints one JSON line: documents, chunks and seconds per stage.
"""

import hashlib
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import boto3  # noqa: E402
import chromadb  # noqa: E402
from langchain_text_splitters import Language, RecursiveCharacterTextSplitter  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

endpoint, bucket, chroma_port, collection_name, model_dir = sys.argv[1:6]
timings = {"fetch": 0.0, "chunk": 0.0, "embed": 0.0, "upsert": 0.0}
started = time.perf_counter()
model = SentenceTransformer(model_dir, device="cpu")
# Same size bound as ours: at most 256 model tokens per chunk.
splitters = {}


def splitter(key):
    language = {".py": Language.PYTHON, ".rs": Language.RUST, ".md": Language.MARKDOWN,
                ".html": Language.HTML}.get(os.path.splitext(key)[1])
    if language not in splitters:
        kwargs = dict(chunk_size=254, chunk_overlap=0)
        if language is None:
            splitters[language] = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
                model.tokenizer, **kwargs)
        else:
            splitters[language] = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
                model.tokenizer, separators=RecursiveCharacterTextSplitter.get_separators_for_language(language),
                **kwargs)
    return splitters[language]


s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="bench", aws_secret_access_key="bench")
client = chromadb.HttpClient(host="127.0.0.1", port=int(chroma_port))
collection = client.get_or_create_collection(collection_name, metadata={"hnsw:space": "cosine"})
documents = chunks = 0
pending_ids, pending_texts, pending_meta = [], [], []


def flush():
    global pending_ids, pending_texts, pending_meta
    if not pending_ids:
        return
    t = time.perf_counter()
    vectors = model.encode(pending_texts, batch_size=32, normalize_embeddings=True)
    timings["embed"] += time.perf_counter() - t
    t = time.perf_counter()
    collection.upsert(ids=pending_ids, documents=pending_texts, metadatas=pending_meta,
                      embeddings=vectors.tolist())
    timings["upsert"] += time.perf_counter() - t
    pending_ids, pending_texts, pending_meta = [], [], []


for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
    for item in page.get("Contents", []):
        key = item["Key"]
        t = time.perf_counter()
        text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8", "replace")
        timings["fetch"] += time.perf_counter() - t
        t = time.perf_counter()
        pieces = splitter(key).split_text(text)
        timings["chunk"] += time.perf_counter() - t
        key_sha = hashlib.sha256(key.encode()).hexdigest()
        for index, piece in enumerate(pieces):
            pending_ids.append(f"{key_sha}-{index}")
            pending_texts.append(piece)
            pending_meta.append({"document_key": key, "chunk_index": index})
            if len(pending_ids) >= 300:
                flush()
        documents += 1
        chunks += len(pieces)
flush()
print(json.dumps({"documents": documents, "chunks": chunks,
                  "wall_seconds": round(time.perf_counter() - started, 2),
                  "stage_seconds": {k: round(v, 2) for k, v in timings.items()}}))
