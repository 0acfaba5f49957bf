#!/usr/bin/env python3
"""Memory of one large S3 text object: peak RSS of `chroma-syncd run` on a
single markdown object of each given size, streamed in segments of
SEGMENT_MB (default 1), and once read whole (segment above its size) for
comparison. Flat RSS across sizes is the point: a streamed object costs one
segment of memory, whatever its size.

Usage: bench/big_object.py [SIZES_MB ...]   (default 2 8; needs what
bench/e2e.py needs, less the peer's venv)
"""

import json
import os
import random
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import BINARY, start_servers, timed  # noqa: E402
from make_corpus import markdown  # noqa: E402


def document(rng, size):
    """About `size` bytes of markdown, in pieces (make_corpus makes small files)."""
    parts, total = [], 0
    while total < size:
        part = markdown(rng, 256 * 1024).encode()
        parts.append(part)
        total += len(part)
    return b"".join(parts)


def main(sizes):
    segment_mb = float(os.environ.get("SEGMENT_MB", "1"))
    work = tempfile.mkdtemp(prefix="chroma-syncd-big-")
    servers, chroma_port, s3_port, s3 = start_servers(work)
    try:
        s3.create_bucket(Bucket="big")
        rng = random.Random(7)
        runs = []
        largest = max(sizes)
        plan = [(size, segment_mb) for size in sizes] + [(largest, largest * 2)]
        for index, (size, segment) in enumerate(plan):
            key = f"object-{index}.md"
            s3.put_object(Bucket="big", Key=key, Body=document(rng, int(size * 1024 * 1024)))
            config = os.path.join(work, f"config-{index}.toml")
            with open(config, "w") as out:
                out.write(f"[s3]\nmax_object_bytes = {int(largest * 4 * 1024 * 1024)}\n"
                          f"stream_segment_bytes = {int(segment * 1024 * 1024)}\n")
            source = {"database_name": "big", "s3": {
                "bucket_name": "big", "region": "us-east-1", "collection_name": f"big-{index}",
                "aws_credential_id": 0, "endpoint_url": f"http://127.0.0.1:{s3_port}",
                "force_path_style": True}}
            env = {**os.environ, "CHROMA_URL": f"http://127.0.0.1:{chroma_port}",
                   "CHROMA_SYNCD_CONFIG": config,
                   "CHROMA_SYNCD_STATE_DIR": os.path.join(work, f"state-{index}"),
                   "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                   "AWS_EC2_METADATA_DISABLED": "true", "RUST_LOG": "warn",
                   # moto on loopback is trusted here (the daemon refuses
                   # internal S3 endpoints unless allowlisted).
                   "CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS": f"http://127.0.0.1:{s3_port}"}
            wall, rss, out = timed([BINARY, "run", "--source", json.dumps(source), "--object-key", key], env)
            runs.append({"object_mb": size, "segment_mb": segment,
                         "mode": "streamed" if segment < size else "whole",
                         "wall_seconds": round(wall, 1), "peak_rss_mb": rss,
                         "summary": out.strip().splitlines()[-2:]})
            print(json.dumps(runs[-1]), flush=True)
    finally:
        for server in servers:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main([float(s) for s in sys.argv[1:]] or [2.0, 8.0])
