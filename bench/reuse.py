#!/usr/bin/env python3
"""Never the same text embedded twice (issue 33), measured: a duplicate-heavy
corpus synced by the one-shot `run` from moto S3 into Chroma twice in one
go, with vector reuse off and on, each into its own collection.

The corpus is bench/make_corpus.py's (TOTAL_MB), stored twice: under `a/` and
under `b/`, so half of all chunks repeat another's text. Prints wall time,
chunks upserted, chunks whose vector was reused and the endpoint-free
embedding time (`stats` of the run), the ratio of embedding work, and
whether the two collections hold the same vectors bit for bit. The CPU is
named. Needs the release build and the test venv (see bench/e2e.py).

Usage: ~/.cache/chroma-syncd/venv/bin/python bench/reuse.py [TOTAL_MB]   (default 1)
"""

import json
import os
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import BINARY, ROOT, start_servers, timed  # noqa: E402


def cpu():
    with open("/proc/cpuinfo") as f:
        info = {key.strip(): value.strip() for key, value in (
            line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)}
    flags = info.get("flags", "").split()
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16") if f in flags]
    return f"{info.get('model name', '?').strip()} (family {info.get('cpu family', '?').strip()}, " \
           f"model {info.get('model', '?').strip()}; {', '.join(simd)})"


def main(total_mb="1"):
    work = tempfile.mkdtemp(prefix="chroma-syncd-reuse-")
    corpus = os.path.join(work, "corpus")
    subprocess.run([sys.executable, os.path.join(ROOT, "bench/make_corpus.py"), corpus, total_mb], check=True)
    servers, chroma_port, s3_port, s3 = start_servers(work)
    try:
        s3.create_bucket(Bucket="corpus")
        for copy in ("a", "b"):
            for base, _, names in os.walk(corpus):
                for name in names:
                    path = os.path.join(base, name)
                    s3.upload_file(path, "corpus", f"{copy}/{os.path.relpath(path, corpus)}")
        results = {"cpu": cpu(), "corpus_mb_per_copy": float(total_mb), "copies": 2}
        base = f"http://127.0.0.1:{chroma_port}/api/v2/tenants/default_tenant/databases/bench/collections"

        def vectors(name):
            collection = json.load(urllib.request.urlopen(f"{base}/{name}"))
            out, offset = {}, 0
            while True:
                body = json.dumps({"include": ["embeddings"], "limit": 1000, "offset": offset}).encode()
                request = urllib.request.Request(f"{base}/{collection['id']}/get", data=body,
                                                 headers={"content-type": "application/json"})
                page = json.load(urllib.request.urlopen(request))
                out.update(zip(page["ids"], (tuple(e) for e in page["embeddings"])))
                if len(page["ids"]) < 1000:
                    return out
                offset += 1000

        for label, reuse in (("without_reuse", "false"), ("with_reuse", "true")):
            source = {"database_name": "bench", "s3": {
                "bucket_name": "corpus", "region": "us-east-1", "collection_name": label,
                "aws_credential_id": 0, "endpoint_url": f"http://127.0.0.1:{s3_port}", "force_path_style": True}}
            env = {**os.environ, "CHROMA_URL": f"http://127.0.0.1:{chroma_port}",
                   "CHROMA_SYNCD_STATE_DIR": os.path.join(work, f"state-{label}"),
                   "CHROMA_SYNCD_EMBEDDING_REUSE": reuse,
                   "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                   "AWS_EC2_METADATA_DISABLED": "true", "RUST_LOG": "warn",
                   "CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS": f"http://127.0.0.1:{s3_port}"}
            wall, rss, out = timed([BINARY, "run", "--source", json.dumps(source)], env)
            results[label] = {"wall_seconds": round(wall, 1), "peak_rss_mb": rss,
                              "output": out.strip().splitlines()[-4:]}
        a, b = vectors("without_reuse"), vectors("with_reuse")
        results["same_ids"] = a.keys() == b.keys()
        results["identical_vectors"] = a == b
        results["chunks"] = len(a)
        results["wall_ratio_with_over_without"] = round(
            results["with_reuse"]["wall_seconds"] / results["without_reuse"]["wall_seconds"], 3)
        print(json.dumps(results, indent=2))
    finally:
        for server in servers:
            server.kill()


if __name__ == "__main__":
    main(*sys.argv[1:])
