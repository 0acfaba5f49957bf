#!/usr/bin/env python3
"""Would int8 document vectors retrieve what f32 ones do? (issue 29, item 3)

bench/int8_accuracy.py judged int8 dense layers by cosine to the exact
vectors (min 0.9974 against a 0.999 bar). Users see rankings, not cosines, so
this judges int8 the way they will: on a self-retrieval set from the
benchmark corpus, documents embedded with each precision, queries always
embedded exactly (f32), compare the top-10 lists.

How:
1. bench/make_corpus.py writes the e2e benchmark corpus (10 MB, seed 7 by
   default) into a temporary directory.
2. Each file is chunked roughly as the daemon would (src/chunk.rs: markdown
   structure / code items, packed up to a token budget): HTML loses its
   head, nav, header and footer (src/extract/mod.rs) and becomes markdown;
   every file is cut at blank lines into blocks (paragraphs, headings, lists,
   functions), blocks longer than the budget into sentences, a heading goes
   with the block after it, and consecutive pieces are packed greedily while
   the chunk stays within MAX_TOKENS including [CLS] and [SEP]. The daemon's
   window is 256; the default here is 128 because the numpy model (float64,
   one thread) needs ~1.45 s per 256-token chunk for the four variants, which
   is ~50 min for 2,000 chunks, against ~0.52 s per chunk at 128 tokens.
3. CHUNKS chunks are drawn uniformly at random from all of them (seeded).
   QUERIES of those chunks are drawn, and from each one prose sentence of at
   least 8 words (not a heading or list item) that occurs in no other chunk
   of the set; that chunk is the query's one relevant answer.
4. Queries are embedded with the exact model; documents with each variant of
   bench/int8_accuracy.py (imported, not copied): exact (float64, standing
   for f32), bf16 operands (the shipped path, a control), int8 symmetric
   activations, int8 asymmetric u8 activations (VNNI's vpdpbusd form).
5. Per variant: mean top-10 overlap with the exact documents' ranking
   (|top10_exact ∩ top10_variant| / 10), recall@10 and recall@1 of the source
   chunk, how often the top-1 result is unchanged, the exact ranks of the
   documents a variant brings into a top 10, and min / mean cosine of each
   document vector to its exact one.
   The bar for offering precision = "int8": overlap >= 0.97 and recall@10
   within 1 point of f32.

Two changes for speed, neither changing what is computed beyond rounding:
the model's GELU uses a vectorised erf (Numerical Recipes' erfc, |error| <
1.2e-7) instead of math.erf element by element, which took half the time;
it is checked at start against the unpatched model (cosine printed). And the
quantised (int8) or rounded (bf16) weights are computed once per weight
instead of on every call.

Usage (one core; about 18 min with the defaults):
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
    ~/.cache/chroma-syncd/venv/bin/python bench/int8_retrieval.py \\
        [--chunks 2000] [--queries 1000] [--max-tokens 128] [--corpus-mb 10] \\
        [--seed 7] [--save VECTORS.npz]
Prints a markdown report on stdout, progress on stderr. Needs numpy and
tokenizers (the test venv has both) and the model in CHROMA_SYNCD_MODEL_DIR.
"""

import argparse
import html as htmllib
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import int8_accuracy as ia  # noqa: E402

ref = ia.ref
ROOT = ia.ROOT
MIN_QUERY_WORDS = 8
K = 10

VARIANTS = [
    ("bf16 operands (ships; control)", "bf16", ia.bf16_linear),
    ("int8, symmetric activations", "int8_sym", ia.int8_linear),
    ("int8, asymmetric u8 activations (VNNI form)", "int8_asym", ia.int8_asymmetric_linear),
]


# --------------------------------------------------------------------------- #
# speed: vectorised GELU, weights quantised once                              #
# --------------------------------------------------------------------------- #

EXACT_GELU = ref.gelu_exact


def erf(x):
    """erf via Numerical Recipes' erfc Chebyshev fit (|error| < 1.2e-7)."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    r = t * np.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (
        0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (
            1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
    return np.where(x >= 0, 1.0 - r, r - 1.0)


def gelu_vectorised(x):
    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(x.dtype)


def cache_weight_transforms(model):
    """int8_accuracy's quantise_rows and bf16 recompute the weight operand on
    every call; memoise them for the model's own (never freed) weights."""
    weights = {id(w) for w in model.w.values()}
    for name in ("quantise_rows", "bf16"):
        function = getattr(ia, name)
        memo = {}

        def cached(x, function=function, memo=memo):
            if id(x) not in weights:
                return function(x)
            if id(x) not in memo:
                memo[id(x)] = function(x)
            return memo[id(x)]

        setattr(ia, name, cached)


def check_gelu(embedder):
    """Cosine between the exact model with math.erf and with the vectorised
    erf, on three fixture texts (one of 256 tokens)."""
    xs = np.linspace(-10, 10, 400001)
    erf_error = float(np.abs(erf(xs) - np.array([math.erf(v) for v in xs])).max())
    texts = [ref.LONG_PARAGRAPH, ref.MARKDOWN_SNIPPET, ref.RUST_SNIPPET]
    ref.gelu_exact = EXACT_GELU
    before = ia.embed_all(embedder, texts, ia.EXACT_LINEAR)
    ref.gelu_exact = gelu_vectorised
    after = ia.embed_all(embedder, texts, ia.EXACT_LINEAR)
    return erf_error, min(float(a @ b) for a, b in zip(before, after))


# --------------------------------------------------------------------------- #
# corpus and chunks                                                           #
# --------------------------------------------------------------------------- #

def html_to_markdown(page):
    page = re.sub(r"(?s)<(head|nav|header|footer)\b.*?</\1>", "", page)
    page = re.sub(r"<h([1-6])>(.*?)</h\1>", lambda m: "\n\n" + "#" * int(m[1]) + " " + m[2] + "\n\n", page)
    page = re.sub(r"(?s)<p>(.*?)</p>", r"\n\n\1\n\n", page)
    page = re.sub(r"<li>(.*?)</li>", r"\n- \1", page)
    page = re.sub(r"<[^>]+>", "", page)
    return htmllib.unescape(re.sub(r"\n{3,}", "\n\n", page)).strip()


def chunk_text(text, counter, budget):
    """Blocks at blank lines (sentences if a block is over budget), packed
    greedily up to `budget` tokens (BERT pre-tokenisation splits at
    whitespace, so token counts of whitespace-joined pieces add up)."""
    pieces = []
    for block in re.split(r"\n\s*\n", text):
        block = block.strip()
        if not block:
            continue
        if counter(block) <= budget:
            pieces.append(block)
            continue
        for sentence in re.split(r"(?<=\.)\s+", block):
            if counter(sentence) <= budget:
                pieces.append(sentence)
            else:  # not produced by make_corpus.py; cut at words to be safe
                words, part = sentence.split(), []
                for word in words:
                    if part and counter(" ".join(part + [word])) > budget:
                        pieces.append(" ".join(part))
                        part = []
                    part.append(word)
                pieces.append(" ".join(part))
    # A heading goes with the block after it (no chunk ends on a heading).
    glued, headings = [], []
    for piece in pieces:
        if piece.startswith("#"):
            headings.append(piece)
            continue
        if headings and counter("\n\n".join(headings + [piece])) > budget:
            glued.append("\n\n".join(headings))
            headings = []
        glued.append("\n\n".join(headings + [piece]))
        headings = []
    if headings:
        glued.append("\n\n".join(headings))
    chunks, current, size = [], [], 0
    for piece in glued:
        n = counter(piece)
        if current and size + n > budget:
            chunks.append("\n\n".join(current))
            current, size = [], 0
        current.append(piece)
        size += n
    if current:
        chunks.append("\n\n".join(current))
    return chunks


def build_set(args, tokenizer):
    work = tempfile.mkdtemp(prefix="int8-retrieval-")
    corpus = os.path.join(work, "corpus")
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "make_corpus.py"), corpus,
                    str(args.corpus_mb), str(args.seed)], check=True, stdout=sys.stderr)

    def counter(text):
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    budget = args.max_tokens - 2
    everything = []
    files = 0
    for kind in sorted(os.listdir(corpus)):
        for name in sorted(os.listdir(os.path.join(corpus, kind))):
            text = open(os.path.join(corpus, kind, name), encoding="utf-8").read()
            if kind == "html":
                text = html_to_markdown(text)
            everything += [(kind, chunk) for chunk in chunk_text(text, counter, budget)]
            files += 1
    shutil.rmtree(work)
    rng = random.Random(args.seed)
    picked = rng.sample(everything, args.chunks)
    docs = [text for _, text in picked]
    kinds = [kind for kind, _ in picked]
    queries, sources = [], []
    for index in rng.sample(range(len(docs)), len(docs)):
        if len(queries) == args.queries:
            break
        sentences = [s for s in re.findall(r"[A-Z][a-z]*(?: [a-z]+)+\.", docs[index])
                     if len(s.split()) >= MIN_QUERY_WORDS]
        rng.shuffle(sentences)
        for sentence in sentences:
            if sum(sentence in doc for doc in docs) == 1:
                queries.append(sentence)
                sources.append(index)
                break
    if len(queries) < args.queries:
        raise SystemExit(f"only {len(queries)} queries could be drawn")
    return {"files": files, "all_chunks": len(everything), "docs": docs, "kinds": kinds,
            "queries": queries, "sources": np.array(sources)}


# --------------------------------------------------------------------------- #
# embedding and metrics                                                       #
# --------------------------------------------------------------------------- #

def embed(embedder, texts, linear, label):
    out = np.empty((len(texts), embedder.model.hidden))
    start = time.time()
    ref.linear = linear
    try:
        for i, text in enumerate(texts):
            out[i] = embedder.encode(text)[0]
            if (i + 1) % 250 == 0 or i + 1 == len(texts):
                spent = time.time() - start
                print(f"  {label}: {i + 1}/{len(texts)} in {spent:.0f} s "
                      f"(eta {spent / (i + 1) * (len(texts) - i - 1):.0f} s)", file=sys.stderr, flush=True)
    finally:
        ref.linear = ia.EXACT_LINEAR
    return out, time.time() - start


def top_k(scores, k=K):
    # Stable sort on -score: ties (not expected) resolve by index, identically.
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def metrics(queries, exact_docs, docs, sources):
    exact_scores = queries @ exact_docs.T
    scores = queries @ docs.T
    exact_top, top = top_k(exact_scores), top_k(scores)
    overlap = np.array([len(set(a) & set(b)) / K for a, b in zip(exact_top, top)])
    cosines = np.sum(exact_docs * docs, axis=1)
    ordered = np.sort(exact_scores, axis=1)[:, ::-1]
    # Exact (1-based) ranks of the documents a variant brings into the top 10.
    exact_rank = np.argsort(np.argsort(-exact_scores, axis=1, kind="stable"), axis=1) + 1
    incoming = np.array([rank for i in range(len(top)) for d, rank in zip(top[i], exact_rank[i, top[i]])
                         if d not in set(exact_top[i])] or [0])
    found, exact_found = (top == sources[:, None]).any(axis=1), (exact_top == sources[:, None]).any(axis=1)
    return {
        "overlap": overlap.mean(),
        "overlap_ci95": 1.96 * overlap.std(ddof=1) / math.sqrt(len(overlap)),
        "overlap_min": overlap.min(),
        "queries_identical_top10": float((overlap == 1).mean()),
        "top1_unchanged": float((top[:, 0] == exact_top[:, 0]).mean()),
        "incoming_rank": (np.median(incoming), np.percentile(incoming, 95), incoming.max()),
        "source_lost": int((exact_found & ~found).sum()),
        "source_gained": int((~exact_found & found).sum()),
        "recall10": float(found.mean()),
        "recall1": float((top[:, 0] == sources).mean()),
        "cos_min": cosines.min(),
        "cos_mean": cosines.mean(),
        "cos_below_0999": int((cosines < 0.999).sum()),
        # Why top-10 lists move: the exact gap between ranks 10 and 11, and how
        # far a score moves with the document's precision.
        "gap_10_11_median": float(np.median(ordered[:, K - 1] - ordered[:, K])),
        "score_shift_median": float(np.median(np.abs(scores - exact_scores))),
    }


def cpu_info():
    fields = {}
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model") and key not in fields:
                fields[key] = value.strip()
            if key == "flags" and not flags:
                flags = set(value.split())
    vnni = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in ("avx512_vnni", "avx_vnni"))
    return (f"{fields.get('model name')} (cpu family {fields.get('cpu family')}, model "
            f"{fields.get('model')}), {os.cpu_count()} CPUs; {vnni}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--corpus-mb", type=float, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--save", help="write every vector set and the texts to this .npz")
    args = parser.parse_args()
    started = time.time()

    embedder = ref.SentenceEmbedder(ia.MODEL_DIR)
    cache_weight_transforms(embedder.model)
    erf_error, gelu_cosine = check_gelu(embedder)
    print(f"vectorised erf: max |error| {erf_error:.2e}; exact model, cosine to math.erf GELU "
          f"min {gelu_cosine:.12f}", file=sys.stderr)

    counting = Tokenizer.from_file(os.path.join(ia.MODEL_DIR, "tokenizer.json"))
    counting.no_truncation()
    counting.no_padding()
    data = build_set(args, counting)
    docs, queries, sources = data["docs"], data["queries"], data["sources"]
    doc_tokens = np.array([len(embedder.tokenizer.encode(t).ids) for t in docs])
    query_tokens = np.array([len(embedder.tokenizer.encode(t).ids) for t in queries])
    kinds = {k: data["kinds"].count(k) for k in sorted(set(data["kinds"]))}
    print(f"{data['files']} files -> {data['all_chunks']} chunks; using {len(docs)} "
          f"({kinds}), {len(queries)} queries", file=sys.stderr)

    query_vectors, query_seconds = embed(embedder, queries, ia.EXACT_LINEAR, "queries (exact)")
    exact_docs, exact_seconds = embed(embedder, docs, ia.EXACT_LINEAR, "documents exact")
    results, seconds = {}, {"queries": query_seconds, "exact": exact_seconds}
    vectors = {"queries": query_vectors, "exact": exact_docs}
    for label, key, linear in VARIANTS:
        vectors[key], seconds[key] = embed(embedder, docs, linear, f"documents {key}")
        results[key] = metrics(query_vectors, exact_docs, vectors[key], sources)
    baseline = metrics(query_vectors, exact_docs, exact_docs, sources)
    if args.save:
        np.savez_compressed(args.save, doc_texts=np.array(docs), query_texts=np.array(queries),
                            sources=sources, **vectors)

    command = ("OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 "
               "~/.cache/chroma-syncd/venv/bin/python bench/int8_retrieval.py " + " ".join(sys.argv[1:]))
    print(f"Command: `{command.strip()}`\n")
    print(f"CPU: {cpu_info()}\n")
    print(f"Set: bench/make_corpus.py {args.corpus_mb:g} MB seed {args.seed}: {data['files']} files, "
          f"{data['all_chunks']} chunks of at most {args.max_tokens} tokens; {len(docs)} drawn "
          f"({', '.join(f'{k} {v}' for k, v in kinds.items())}), tokens per chunk mean "
          f"{doc_tokens.mean():.1f} (min {doc_tokens.min()}, max {doc_tokens.max()}); "
          f"{len(queries)} queries (one sentence of >= {MIN_QUERY_WORDS} words from a distinct "
          f"chunk, unique to it), tokens mean {query_tokens.mean():.1f}.\n")
    print(f"GELU check: vectorised erf max |error| {erf_error:.1e}; exact-model cosine to the "
          f"math.erf model, min over 3 fixture texts: {gelu_cosine:.12f}.\n")
    print("| document vectors | top-10 overlap with f32 (mean ± 95% CI) | min | queries with identical "
          "top-10 | recall@10 | Δ recall@10 vs f32 (points) | recall@1 | top-1 unchanged "
          "| min cosine to f32 | mean cosine | docs below 0.999 | bar met |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| f32 (exact) | 1 | 1 | 100% | {100 * baseline['recall10']:.1f}% | — "
          f"| {100 * baseline['recall1']:.1f}% | 100% | 1 | 1 | 0 | — |")
    for label, key, _ in VARIANTS:
        r = results[key]
        delta = 100 * (r["recall10"] - baseline["recall10"])
        met = r["overlap"] >= 0.97 and abs(delta) <= 1.0
        print(f"| {label} | {r['overlap']:.4f} ± {r['overlap_ci95']:.4f} | {r['overlap_min']:.1f} "
              f"| {100 * r['queries_identical_top10']:.1f}% | {100 * r['recall10']:.1f}% "
              f"| {delta:+.1f} | {100 * r['recall1']:.1f}% | {100 * r['top1_unchanged']:.1f}% "
              f"| {r['cos_min']:.6f} | {r['cos_mean']:.6f} "
              f"| {r['cos_below_0999']} / {len(docs)} | {'yes' if met else 'no'} |")
    print("\nMedian exact score gap between ranks 10 and 11: "
          f"{baseline['gap_10_11_median']:.5f}; median |query·doc score change| per variant: "
          + ", ".join(f"{key} {results[key]['score_shift_median']:.5f}" for _, key, _ in VARIANTS) + ".\n")
    print("Documents a variant brings into a top 10, their exact rank (median / p95 / max), and "
          "queries whose source chunk leaves / enters the top 10: "
          + "; ".join(f"{key} {r[0]:g} / {r[1]:g} / {r[2]:g}, {results[key]['source_lost']} / "
                      f"{results[key]['source_gained']}"
                      for _, key, _ in VARIANTS for r in [results[key]["incoming_rank"]]) + ".\n")
    print("Seconds (one thread): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
          + f"; total {time.time() - started:.0f}.")


if __name__ == "__main__":
    main()
