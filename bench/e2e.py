#!/usr/bin/env python3
"""End-to-end throughput against the Python peer, in one go on this machine:
a corpus in a real S3 server (moto) synced into a real Chroma server by
1. `chroma-syncd run` (first sync), 2. `chroma-syncd run` again (re-sync of the
unchanged corpus: nothing should be embedded), 3. bench/peer.py (boto3 +
langchain-text-splitters + sentence-transformers + chromadb), each into its
own collection.

Usage: bench/e2e.py [TOTAL_MB]   (default 10; needs a release build, the test
venv (scripts/test-venv) and the bench venv with the peer's packages:
python3 -m venv ~/.cache/chroma-syncd/bench-venv && \
~/.cache/chroma-syncd/bench-venv/bin/pip install sentence-transformers \
    langchain-text-splitters boto3 chromadb==1.5.9)
Prints documents, chunks, wall time, chunks/s, MB/s, peak RSS of each, the
ratios ours/peer, and our time by stage.

E2E_FILESYSTEM=0 leaves out the filesystem source's first sync and
unchanged re-sync of the same corpus (run by default).

E2E_PATHS=avx2,avx512 adds a first sync per forced kernel path
(BERT_CPU_ISA), each into its own collection and state, in the same run,
with its ratio to the same peer run.
"""

import json
import os
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
BENCH_VENV = os.environ.get("CHROMA_SYNCD_BENCH_VENV", f"{HOME}/.cache/chroma-syncd/bench-venv")
MODEL_DIR = os.environ.get("CHROMA_SYNCD_MODEL_DIR", f"{HOME}/.cache/chroma-syncd/models/all-MiniLM-L6-v2")


def timed(command, env):
    """Runs `command`; (wall seconds, its own peak RSS in MB, stdout)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.time()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True)
        # wait4 gives this child's own resource use (RUSAGE_CHILDREN would
        # be the maximum over every child so far).
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.time() - start
        out.seek(0)
        err.seek(0)
        out, err = out.read(), err.read()
    rss_mb = round(usage.ru_maxrss / 1024, 1)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[0]} failed:\n{out}\n{err[-3000:]}")
    return wall, rss_mb, out


def cpu_model():
    """The CPU the figures were measured on: model name, family/model, and
    the flags that decide the kernel path."""
    info = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            name, _, value = line.partition(":")
            info.setdefault(name.strip(), value.strip())
    flags = set(info.get("flags", "").split())
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile"]
    return (f'{info.get("model name")} (family {info.get("cpu family")}, model {info.get("model")}; '
            f'{os.cpu_count()} CPUs; {" ".join(f for f in wanted if f in flags)})')


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


def start_chroma(path, port, logs=subprocess.DEVNULL):
    """A local Chroma server (`chroma run`, the test venv's) keeping its data
    in `path`, on loopback `port`; not yet answering."""
    return subprocess.Popen([f"{VENV}/bin/chroma", "run", "--host", "127.0.0.1", "--port", str(port),
                             "--path", path], stdout=logs, stderr=logs,
                            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})


def start_servers(work):
    """A Chroma and a moto S3 server on free loopback ports, logging into
    `work`: (processes to kill, chroma port, s3 port, boto3 S3 client)."""
    chroma_port, s3_port = free_port(), free_port()
    logs = open(os.path.join(work, "servers.log"), "w")
    servers = [
        start_chroma(os.path.join(work, "chroma"), chroma_port, logs),
        subprocess.Popen([f"{VENV}/bin/moto_server", "-H", "127.0.0.1", "-p", str(s3_port)], stdout=logs, stderr=logs),
    ]
    try:
        wait_http(f"http://127.0.0.1:{chroma_port}/api/v2/heartbeat")
        wait_http(f"http://127.0.0.1:{s3_port}/moto-api/")
    except BaseException:
        for server in servers:
            server.kill()
        raise
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_port}", region_name="us-east-1",
                      aws_access_key_id="bench", aws_secret_access_key="bench")
    return servers, chroma_port, s3_port, s3


def main(total_mb="10"):
    work = tempfile.mkdtemp(prefix="chroma-syncd-bench-")
    corpus = os.path.join(work, "corpus")
    subprocess.run([sys.executable, os.path.join(ROOT, "bench/make_corpus.py"), corpus, total_mb], check=True)
    servers, chroma_port, s3_port, s3 = start_servers(work)
    try:
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
               "AWS_EC2_METADATA_DISABLED": "true", "RUST_LOG": "warn",
               # moto on loopback is trusted here (the daemon refuses internal
               # S3 endpoints unless allowlisted).
               "CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS": f"http://127.0.0.1:{s3_port}"}
        base = f"http://127.0.0.1:{chroma_port}/api/v2/tenants/default_tenant/databases/bench/collections"

        def count(name):
            collection = json.load(urllib.request.urlopen(f"{base}/{name}"))
            return json.load(urllib.request.urlopen(f"{base}/{collection['id']}/count"))

        mb = total_bytes / 1024 / 1024
        results = {"documents": files, "megabytes": round(mb, 2)}
        for label in ("ours_first_sync", "ours_resync"):
            wall, rss, out = timed([BINARY, "run", "--source", json.dumps(source)], env)
            results[label] = {"wall_seconds": round(wall, 2), "peak_rss_mb": rss,
                              "output": out.strip().splitlines()}
        for isa in filter(None, os.environ.get("E2E_PATHS", "").split(",")):
            forced = {**source, "s3": {**source["s3"], "collection_name": f"corpus-{isa}"}}
            forced_env = {**env, "BERT_CPU_ISA": isa,
                          "CHROMA_SYNCD_STATE_DIR": os.path.join(work, f"state-{isa}")}
            wall, rss, out = timed([BINARY, "run", "--source", json.dumps(forced)], forced_env)
            forced_chunks = count(f"corpus-{isa}")
            results[f"ours_first_sync_{isa}"] = {
                "wall_seconds": round(wall, 1), "peak_rss_mb": rss, "chunks": forced_chunks,
                "chunks_per_second": round(forced_chunks / wall, 1),
                "megabytes_per_second": round(mb / wall, 3), "output": out.strip().splitlines()}
        if os.environ.get("E2E_FILESYSTEM", "1") != "0":
            # The same corpus as a local directory: the filesystem source's
            # first sync and its unchanged re-sync.
            fs_source = {"database_name": "bench", "filesystem": {
                "root": corpus, "collection_name": "corpus-fs"}}
            fs_env = {**env, "CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS": corpus,
                      "CHROMA_SYNCD_STATE_DIR": os.path.join(work, "state-fs")}
            for label in ("ours_fs_first_sync", "ours_fs_resync"):
                wall, rss, out = timed([BINARY, "run", "--source", json.dumps(fs_source)], fs_env)
                results[label] = {"wall_seconds": round(wall, 2), "peak_rss_mb": rss,
                                  "output": out.strip().splitlines()}
            results["ours_fs_resync"]["fraction_of_first"] = round(
                results["ours_fs_resync"]["wall_seconds"] / results["ours_fs_first_sync"]["wall_seconds"], 3)
        chunks = count("corpus")
        first = results["ours_first_sync"]
        first.update(chunks=chunks, chunks_per_second=round(chunks / first["wall_seconds"], 1),
                     megabytes_per_second=round(mb / first["wall_seconds"], 3))
        results["ours_resync"]["fraction_of_first"] = round(
            results["ours_resync"]["wall_seconds"] / first["wall_seconds"], 3)
        results["cpu"] = cpu_model()
        if os.path.exists(f"{BENCH_VENV}/bin/python"):
            wall, rss, out = timed([f"{BENCH_VENV}/bin/python", os.path.join(ROOT, "bench/peer.py"),
                                    f"http://127.0.0.1:{s3_port}", "corpus", str(chroma_port),
                                    "peer", MODEL_DIR], env)
            peer = json.loads(out.strip().splitlines()[-1])
            peer.update(wall_seconds=round(wall, 1), peak_rss_mb=rss,
                        chunks_per_second=round(peer["chunks"] / wall, 1),
                        megabytes_per_second=round(mb / wall, 3))
            results["peer"] = peer
            results["ratio_ours_over_peer"] = {
                "chunks_per_second": round(first["chunks_per_second"] / peer["chunks_per_second"], 2),
                "megabytes_per_second": round(first["megabytes_per_second"] / peer["megabytes_per_second"], 2),
                "peak_rss": round(first["peak_rss_mb"] / peer["peak_rss_mb"], 2),
            }
            for label, figures in results.items():
                if label.startswith("ours_first_sync_"):
                    results["ratio_ours_over_peer"][label.removeprefix("ours_first_sync_")] = round(
                        figures["chunks_per_second"] / peer["chunks_per_second"], 2)
        print(json.dumps(results, indent=2))
    finally:
        for server in servers:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main(*sys.argv[1:2])
