#!/usr/bin/env python3
"""Queries a Chroma collection the way a user would: with the official Python
client, embedding the query with all-MiniLM-L6-v2 (the numpy implementation
beside this file; no model hub, no PyTorch).

Usage: query.py MODEL_DIR CHROMA_PORT DATABASE COLLECTION QUERY
Prints JSON: {"embedding_function": name, "ids": [...], "document_keys": [...]}.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import chromadb  # noqa: E402
from make_reference import SentenceEmbedder  # noqa: E402


def main(model_dir, port, database, collection_name, query):
    embedder = SentenceEmbedder(model_dir)
    vector, _ = embedder.encode(query)
    client = chromadb.HttpClient(host="127.0.0.1", port=int(port), database=database)
    collection = client.get_collection(collection_name)
    result = collection.query(query_embeddings=[vector.astype("float32").tolist()], n_results=3)
    print(json.dumps({
        "embedding_function": collection.configuration_json["embedding_function"]["name"],
        "ids": result["ids"][0],
        "document_keys": [m["document_key"] for m in result["metadatas"][0]],
    }))


if __name__ == "__main__":
    main(*sys.argv[1:6])
