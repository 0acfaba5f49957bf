#!/usr/bin/env python3
"""Is the daemon's memory flat as the corpus grows? (issue 33)

For each corpus size, a fresh corpus (bench/make_corpus.py: markdown, HTML,
Rust and Python, plus a few generated PDFs) is synced by a one-shot
`chroma-syncd run` into a real Chroma server, through each source kind
BENCH_MEMORY_SOURCES names (default `filesystem,s3`: the directory itself,
and the same files in a moto S3 bucket). Embeddings come from an
OpenAI-compatible endpoint on loopback that answers at once with vectors
hashed from each text, so a gigabyte takes minutes, not hours, and what is
measured is the daemon's own memory: its peak RSS (wait4) per run, and the
ratio of each size's peak to the smallest size's.

While a run goes, a progress line every BENCH_MEMORY_SAMPLE_SECONDS (60)
gives its peak RSS so far and the chunks stored: a gigabyte takes hours
where Chroma is the bottleneck, and a run stopped early still tells.

After each first sync the same `run` goes again over the unchanged corpus
(unless BENCH_MEMORY_RESYNC=0): its wall time over the first sync's is the
unchanged re-sync ratio at that size, and its peak RSS is reported too.
BENCH_MEMORY_BASELINE=PATH (another build of chroma-syncd, e.g. the last
release's) runs that binary's re-sync first over the same collection, so
the two re-syncs compare in one run (`baseline_resync_wall_seconds`,
`resync_over_baseline`).

Usage: bench/memory.py [SIZE_MB ...]   (default: 10 100)
Needs a release build and the test venv (scripts/test-venv). The daemon
limits glibc's malloc arenas to 2 unless MALLOC_ARENA_MAX is set: run with
MALLOC_ARENA_MAX=16 (glibc's default on 2 cores) to see what that saves.
"""

import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402  (start_servers, timed, cpu_model, BINARY)

DIMENSION = 384
MODEL = "hashed-384"


def hashed_vector(text):
    """A deterministic unit-length vector for `text` (the same text, the
    same vector), cheap to make."""
    seed = hashlib.sha256(text.encode()).digest()
    values = []
    counter = 0
    while len(values) < DIMENSION:
        block = hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        values.extend(x / 2**31 - 1.0 for x in struct.unpack("<8I", block))
        counter += 1
    values = values[:DIMENSION]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in values]


class Embeddings(BaseHTTPRequestHandler):
    """POST /v1/embeddings, as the OpenAI API answers it."""

    def do_POST(self):
        if not self.path.endswith("/embeddings"):
            self.send_error(404)
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        answer = json.dumps({
            "object": "list", "model": body.get("model", MODEL),
            "data": [{"object": "embedding", "index": i, "embedding": hashed_vector(text)}
                     for i, text in enumerate(inputs)],
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_):
        pass


def add_pdfs(corpus, count):
    """A few PDFs of prose pages, made with reportlab (the test venv's)."""
    script = f"""
import os, random
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas
rng = random.Random(7)
words = "sync chroma vector chunk bucket queue worker lease model token batch".split()
for n in range({count}):
    c = canvas.Canvas(os.path.join({corpus!r}, f"report-{{n}}.pdf"), pagesize=A4)
    for page in range(30):
        y = 800
        for line in range(45):
            c.drawString(50, y, " ".join(rng.choice(words) for _ in range(12)))
            y -= 16
        c.showPage()
    c.save()
"""
    subprocess.run([f"{e2e.VENV}/bin/python", "-c", script], check=True)


def timed_with_samples(command, env, chroma_port, collection, labels):
    """`e2e.timed`, printing a progress line every BENCH_MEMORY_SAMPLE_SECONDS
    (default 60): the run's peak RSS so far (VmHWM) and the chunks its
    collection holds. A gigabyte takes hours on a small machine (Chroma
    takes the documents in at ~50 chunks/s on 2 vCPUs), so a run stopped
    early still says how the peak grew with the documents processed."""
    every = float(os.environ.get("BENCH_MEMORY_SAMPLE_SECONDS", "60"))
    done = threading.Event()

    def sample():
        import chromadb  # the test venv's, as the servers
        client = None
        while not done.wait(every):
            pids = subprocess.run(["pgrep", "-f", "--", f"--source .*{collection}"],
                                  capture_output=True, text=True).stdout.split()
            hwm = None
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/status") as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                hwm = round(int(line.split()[1]) / 1024, 1)
                except OSError:
                    pass
            try:
                # The run creates the database: connect once it exists.
                client = client or chromadb.HttpClient(
                    host="127.0.0.1", port=chroma_port, database="bench")
                stored = client.get_collection(collection).count()
            except Exception:  # not created yet, or Chroma busy: skip this sample
                stored = None
            print(json.dumps({**labels, "progress": True, "chunks_stored": stored,
                              "peak_rss_mb_so_far": hwm}), flush=True)

    threading.Thread(target=sample, daemon=True).start()
    try:
        return e2e.timed(command, env)
    finally:
        done.set()


def main(sizes):
    sources = os.environ.get("BENCH_MEMORY_SOURCES", "filesystem,s3").split(",")
    work = tempfile.mkdtemp(prefix="chroma-syncd-memory-")
    servers, chroma_port, s3_port, s3 = e2e.start_servers(work)
    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), Embeddings)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    config = os.path.join(work, "memory.toml")
    with open(config, "w") as f:
        f.write(f"""[embedding.models."{MODEL}"]
kind = "openai"
url = "http://127.0.0.1:{endpoint.server_address[1]}/v1"
max_batch = 64
max_concurrency = 4
max_input_tokens = 4000
""")
    env = {**os.environ, "CHROMA_URL": f"http://127.0.0.1:{chroma_port}", "RUST_LOG": "warn",
           "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_EC2_METADATA_DISABLED": "true",
           "CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS": f"http://127.0.0.1:{s3_port}"}
    results = {"cpu": e2e.cpu_model(), "runs": []}
    try:
        for size in sizes:
            corpus = os.path.join(work, f"corpus-{size}")
            subprocess.run([sys.executable, os.path.join(e2e.ROOT, "bench/make_corpus.py"),
                            corpus, str(size)], check=True, stdout=subprocess.DEVNULL)
            add_pdfs(corpus, max(1, int(float(size) // 50)))
            files = [os.path.join(base, name) for base, _, names in os.walk(corpus) for name in names]
            total = sum(os.path.getsize(path) for path in files)
            for kind in sources:
                collection = f"memory-{kind}-{size}".replace(".", "-")
                if kind == "filesystem":
                    source = {"filesystem": {"root": corpus, "collection_name": collection}}
                    extra = {"CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS": corpus}
                elif kind == "s3":
                    bucket = collection
                    s3.create_bucket(Bucket=bucket)
                    for path in files:
                        s3.upload_file(path, bucket, os.path.relpath(path, corpus))
                    source = {"s3": {"bucket_name": bucket, "region": "us-east-1",
                                     "collection_name": collection, "aws_credential_id": 0,
                                     "endpoint_url": f"http://127.0.0.1:{s3_port}",
                                     "force_path_style": True}}
                    extra = {}
                else:
                    raise SystemExit(f"unknown source kind {kind}")
                source.update(database_name="bench", embedding_model={"model": MODEL})
                run_env = {**env, **extra,
                           "CHROMA_SYNCD_STATE_DIR": os.path.join(work, f"state-{collection}")}
                command = [e2e.BINARY, "run", "--config", config, "--source", json.dumps(source)]
                wall, rss, out = timed_with_samples(
                    command, run_env,
                    chroma_port, collection, {"source": kind, "corpus_mb": round(total / 2**20, 1)})
                run = {"source": kind, "corpus_mb": round(total / 2**20, 1),
                       "files": len(files), "wall_seconds": round(wall, 1),
                       "peak_rss_mb": rss, "summary": out.strip().splitlines()[0]}
                if os.environ.get("BENCH_MEMORY_RESYNC", "1") != "0":
                    # The same `run` again over the unchanged corpus: what a
                    # nightly re-sync of a collection this size costs, now
                    # that the collection holds every chunk (whole-source
                    # reads page through all of them).
                    baseline = os.environ.get("BENCH_MEMORY_BASELINE")
                    if baseline:
                        before, _, before_out = e2e.timed([baseline, *command[1:]], run_env)
                        run.update(baseline_resync_wall_seconds=round(before, 1),
                                   baseline_resync_over_first=round(before / wall, 4),
                                   baseline_resync_summary=before_out.strip().splitlines()[0])
                    again, again_rss, again_out = e2e.timed(command, run_env)
                    if baseline:
                        run.update(resync_over_baseline=round(again / before, 4))
                    run.update(resync_wall_seconds=round(again, 1), resync_peak_rss_mb=again_rss,
                               resync_over_first=round(again / wall, 4),
                               resync_summary=again_out.strip().splitlines()[0])
                results["runs"].append(run)
                print(json.dumps(results["runs"][-1]), flush=True)
        for kind in sources:
            runs = [r for r in results["runs"] if r["source"] == kind]
            if runs:
                base = runs[0]["peak_rss_mb"]
                for r in runs:
                    r["peak_rss_over_smallest"] = round(r["peak_rss_mb"] / base, 2)
        print(json.dumps(results, indent=2))
    finally:
        endpoint.shutdown()
        for server in servers:
            server.kill()


if __name__ == "__main__":
    main(sys.argv[1:] or ["10", "100"])
