#!/usr/bin/env python3
"""Writes a reproducible corpus of markdown, HTML, Rust and Python files.

Usage: make_corpus.py OUT_DIR TOTAL_MB [SEED]
About 40% of the files are markdown (sections of prose), 20% HTML pages
(navigation, header and footer around an article), 20% Rust, 20% Python;
files are 4-64 KiB. Same arguments, same bytes.
"""

import os
import random
import sys

WORDS = ("sync chroma collection vector embedding chunk document bucket object key "
         "queue worker lease heartbeat retry backoff cancel invocation source sink "
         "model token batch upsert delete stale metadata schema index query search "
         "config daemon service systemd container sidecar backfill progress status "
         "error timeout network storage stream memory bounded durable recover crash").split()


def prose(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def markdown(rng, size):
    out = [f"# {prose(rng, 4)}\n"]
    while sum(map(len, out)) < size:
        out.append(f"\n## {prose(rng, 3)}\n\n")
        for _ in range(rng.randint(1, 4)):
            out.append(" ".join(prose(rng, rng.randint(8, 20)) for _ in range(rng.randint(2, 6))) + "\n\n")
        if rng.random() < 0.3:
            out.append("- " + "\n- ".join(prose(rng, 5) for _ in range(4)) + "\n")
    return "".join(out)


def html(rng, size):
    out = ["<!doctype html><html><head><title>" + prose(rng, 4) + "</title></head><body>",
           "<nav><a href='/'>Home</a> <a href='/docs'>Docs</a> <a href='/blog'>Blog</a></nav>",
           "<header><h1>" + prose(rng, 5) + "</h1></header><main><article>"]
    length = sum(map(len, out))
    while length < size:
        part = [f"<h2>{prose(rng, 3)}</h2>"]
        for _ in range(rng.randint(1, 4)):
            part.append("<p>" + " ".join(prose(rng, rng.randint(8, 20)) for _ in range(rng.randint(2, 5))) + "</p>")
        if rng.random() < 0.3:
            part.append("<ul>" + "".join(f"<li>{prose(rng, 5)}</li>" for _ in range(4)) + "</ul>")
        chunk = "\n".join(part)
        out.append(chunk)
        length += len(chunk)
    out.append("</article></main><footer>&copy; chroma-syncd bench</footer></body></html>")
    return "\n".join(out)


def rust(rng, size):
    out = []
    i = 0
    while sum(map(len, out)) < size:
        name = "_".join(rng.choice(WORDS) for _ in range(2))
        out.append(f"/// {prose(rng, 10)}\npub fn {name}_{i}(input: &[u64]) -> u64 {{\n"
                   f"    let mut total = 0;\n    for value in input {{\n"
                   f"        total += value * {rng.randint(1, 99)};\n    }}\n    total\n}}\n\n")
        i += 1
    return "".join(out)


def python(rng, size):
    out = []
    i = 0
    while sum(map(len, out)) < size:
        name = "_".join(rng.choice(WORDS) for _ in range(2))
        out.append(f"def {name}_{i}(items):\n    \"\"\"{prose(rng, 10)}\"\"\"\n"
                   f"    result = []\n    for item in items:\n"
                   f"        result.append(item * {rng.randint(1, 99)})\n    return result\n\n\n")
        i += 1
    return "".join(out)


def main(out_dir, total_mb, seed=7):
    rng = random.Random(int(seed))
    total = int(float(total_mb) * 1024 * 1024)
    written = 0
    n = 0
    while written < total:
        kind = rng.choice(["md", "md", "html", "rs", "py"])
        size = rng.randint(4096, 65536)
        text = {"md": markdown, "html": html, "rs": rust, "py": python}[kind](rng, size)
        path = os.path.join(out_dir, f"{kind}/{n:05d}.{kind}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        written += len(text.encode())
        n += 1
    print(f"{n} files, {written} bytes in {out_dir}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
