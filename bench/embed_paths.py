#!/usr/bin/env python3
"""Embedding throughput of every kernel path this CPU has, against
sentence-transformers on the same 64 texts, in one run (issue 17).

For each path (BERT_CPU_ISA unset = the default, then each forced one) runs
`bench/embed_bench.rs` (release); runs the peer (bench/embed_peer.py) before
the first and after the last, and reports each path's chunks/s against the
mean of the two peer runs, plus the cosine of each path's vectors to the
peer's. Needs the release build of the bench and the bench venv (see
bench/e2e.py's docstring).

Usage: ~/.cache/chroma-syncd/bench-venv/bin/python bench/embed_paths.py \
           [PATH ...]          (default: "" avx512 avx2)
"""

import json
import os
import re
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
TEXTS = "/tmp/embed-texts.json"
ROUNDS = os.environ.get("EMBED_PATHS_ROUNDS", "5")
FIGURES = re.compile(r"(\w+): ([\d.]+) chunks/s \(mean.*?([\d.]+) chunks/s \(best round\), ([\d.]+) chunks per CPU-second")


def ours(isa):
    env = {**os.environ, "EMBED_BENCH_DUMP": TEXTS, "EMBED_BENCH_ROUNDS": ROUNDS,
           "EMBED_BENCH_VECTORS": f"/tmp/embed-ours-{isa or 'default'}.json"}
    env.pop("BERT_CPU_ISA", None)
    if isa:
        env["BERT_CPU_ISA"] = isa
    out = subprocess.run(
        ["cargo", "test", "--release", "--test", "embed_bench", "--", "--ignored", "--nocapture"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    return parse(out)


def peer():
    out = subprocess.run(
        [PYTHON, os.path.join(ROOT, "bench", "embed_peer.py"), TEXTS, "--rounds", "3",
         "--vectors-out", "/tmp/embed-peer.json"],
        capture_output=True, text=True, check=True).stdout
    return parse(out)


def parse(out):
    match = FIGURES.search(out)
    if not match:
        raise SystemExit(f"no figures in:\n{out}")
    return {"mean": float(match[2]), "best": float(match[3]), "cpu": float(match[4])}


def vectors(path):
    with open(path) as f:
        return np.asarray(json.load(f)["vectors"], dtype=np.float64)


def main():
    paths = sys.argv[1:] or ["", "avx512", "avx2"]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "?")
    family = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("cpu family")), "?")
    print(f"CPU: {cpu} (family {family}), {os.cpu_count()} CPUs")
    ours(paths[0])  # writes the texts; also warms the build
    before = peer()
    results = [(isa, ours(isa)) for isa in paths]
    after = peer()
    reference = vectors("/tmp/embed-peer.json")
    base = {key: (before[key] + after[key]) / 2 for key in before}
    print(f"peer (sentence-transformers): {before['mean']:.1f} then {after['mean']:.1f} chunks/s, "
          f"{before['cpu']:.1f} / {after['cpu']:.1f} per CPU-second")
    print("| path | chunks/s (mean) | best round | per CPU-second | vs peer (mean) | vs peer (CPU) | min cosine to peer |")
    print("|---|---|---|---|---|---|---|")
    for isa, figures in results:
        theirs = vectors(f"/tmp/embed-ours-{isa or 'default'}.json")
        cosine = (theirs * reference).sum(1) / (
            np.linalg.norm(theirs, axis=1) * np.linalg.norm(reference, axis=1))
        print(f"| {isa or 'default'} | {figures['mean']:.1f} | {figures['best']:.1f} | "
              f"{figures['cpu']:.1f} | {figures['mean'] / base['mean']:.2f}× | "
              f"{figures['cpu'] / base['cpu']:.2f}× | {cosine.min():.6f} |")
    print(f"| peer | {base['mean']:.1f} | {base['best']:.1f} | {base['cpu']:.1f} | 1.00× | 1.00× | 1 |")


if __name__ == "__main__":
    main()
