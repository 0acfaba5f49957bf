#!/usr/bin/env python3
"""End-to-end throughput: a corpus in a real S3 server (moto) synced into a
real Chroma server by `chroma-syncd run`, in one go on this machine.

Usage: bench/e2e.py [TOTAL_MB]   (default 10; needs a release build and the
test venv: scripts/test-venv, cargo build --release)
Prints documents, chunks, wall time, chunks/s, MB/s and peak RSS of the daemon.
"""

import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOME = os.path.expanduser("~")
VENV = os.environ.get("CHROMA_SYNCD_TEST_VENV", f"{HOME}/.cache/chroma-syncd/venv")
TARGET = os.environ.get("CARGO_TARGET_DIR", f"{HOME}/.cache/chroma-syncd/target")
BINARY = os.path.join(TARGET, "release", "chroma-syncd")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, limit=90):
    start = time.time()
    while time.time() - start < limit:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


def main(total_mb="10"):
    work = tempfile.mkdtemp(prefix="chroma-syncd-bench-")
    corpus = os.path.join(work, "corpus")
    subprocess.run([sys.executable, os.path.join(ROOT, "bench/make_corpus.py"), corpus, total_mb], check=True)
    chroma_port, s3_port = free_port(), free_port()
    logs = open(os.path.join(work, "servers.log"), "w")
    servers = [
        subprocess.Popen([f"{VENV}/bin/chroma", "run", "--host", "127.0.0.1", "--port", str(chroma_port),
                          "--path", os.path.join(work, "chroma")], stdout=logs, stderr=logs,
                         env={**os.environ, "ANONYMIZED_TELEMETRY": "False"}),
        subprocess.Popen([f"{VENV}/bin/moto_server", "-H", "127.0.0.1", "-p", str(s3_port)], stdout=logs, stderr=logs),
    ]
    try:
        wait_http(f"http://127.0.0.1:{chroma_port}/api/v2/heartbeat")
        wait_http(f"http://127.0.0.1:{s3_port}/moto-api/")
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_port}", region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
        s3.create_bucket(Bucket="corpus")
        total_bytes = 0
        files = 0
        for base, _, names in os.walk(corpus):
            for name in names:
                path = os.path.join(base, name)
                key = os.path.relpath(path, corpus)
                s3.upload_file(path, "corpus", key)
                total_bytes += os.path.getsize(path)
                files += 1
        source = {"database_name": "bench", "s3": {
            "bucket_name": "corpus", "region": "us-east-1", "collection_name": "corpus",
            "aws_credential_id": 0, "endpoint_url": f"http://127.0.0.1:{s3_port}", "force_path_style": True}}
        env = {**os.environ, "CHROMA_URL": f"http://127.0.0.1:{chroma_port}",
               "CHROMA_SYNCD_STATE_DIR": os.path.join(work, "state"),
               "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_EC2_METADATA_DISABLED": "true", "RUST_LOG": "warn"}
        start = time.time()
        run = subprocess.run([BINARY, "run", "--source", json.dumps(source)], env=env,
                             capture_output=True, text=True)
        wall = time.time() - start
        peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if run.returncode != 0:
            raise SystemExit(f"run failed:\n{run.stdout}\n{run.stderr[-3000:]}")
        base = f"http://127.0.0.1:{chroma_port}/api/v2/tenants/default_tenant/databases/bench/collections"
        collection = json.load(urllib.request.urlopen(f"{base}/corpus"))
        chunks = json.load(urllib.request.urlopen(f"{base}/{collection['id']}/count"))
        mb = total_bytes / 1024 / 1024
        print(json.dumps({
            "documents": files, "megabytes": round(mb, 2), "chunks": chunks,
            "wall_seconds": round(wall, 1), "chunks_per_second": round(chunks / wall, 1),
            "megabytes_per_second": round(mb / wall, 3),
            "peak_rss_mb_of_children": round(peak_rss_mb, 1),
            "run_output": run.stdout.strip(),
        }, indent=2))
    finally:
        for server in servers:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main(*sys.argv[1:2])
