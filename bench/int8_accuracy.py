#!/usr/bin/env python3
"""Would int8 dense layers keep all-MiniLM-L6-v2 within cosine 0.999 of the
reference? Measured before writing any int8 kernel (issue 17's bar).

Runs the independent numpy model of tests/reference/make_reference.py twice
on the same texts: exactly (float64), and with every dense layer's operands
quantised as an int8 GEMM would take them — weights symmetric per output
channel, activations symmetric per token (dynamic), products summed exactly
(an int32 accumulator is exact; float64 here is too), then rescaled. Attention
scores, softmax, GELU and LayerNorm stay exact, as an int8 kernel would leave
them. Also the same for bf16 operands, the path that ships, as a control.

Usage: ~/.cache/chroma-syncd/venv/bin/python bench/int8_accuracy.py [TEXTS_JSON]
(TEXTS_JSON: a list of strings, e.g. the /tmp/embed-texts.json embed_bench
dumps; the reference fixture's sentences are always included.)
"""

import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import make_reference as ref  # noqa: E402

MODEL_DIR = os.environ.get(
    "CHROMA_SYNCD_MODEL_DIR",
    os.path.expanduser("~/.cache/chroma-syncd/models/all-MiniLM-L6-v2"),
)
EXACT_LINEAR = ref.linear


def quantise_rows(x):
    """Symmetric int8 per row: (int values as float, scale per row)."""
    scale = np.abs(x).max(axis=-1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    return np.clip(np.rint(x / scale), -127, 127), scale


def int8_linear(x, weight, bias):
    qx, sx = quantise_rows(x)
    qw, sw = quantise_rows(weight)  # [out, in]: per output channel
    return (qx @ qw.T) * sx * sw.T + bias


def int8_asymmetric_linear(x, weight, bias):
    """Activations asymmetric per token (uint8 with a zero point, as VNNI's
    u8×s8 `vpdpbusd` takes them): the sign-skewed GELU outputs use all 256
    levels."""
    low = x.min(axis=-1, keepdims=True)
    high = x.max(axis=-1, keepdims=True)
    scale = (high - low) / 255.0
    scale[scale == 0] = 1.0
    zero = np.rint(-low / scale)
    qx = np.clip(np.rint(x / scale) + zero, 0, 255)
    qw, sw = quantise_rows(weight)
    return ((qx - zero) @ qw.T) * scale * sw.T + bias


def int8_except_down_linear(x, weight, bias):
    """int8 everywhere but the FFN's down projection (input 1536 wide, after
    GELU, where the outliers are), which stays exact."""
    if weight.shape[1] == 1536:
        return EXACT_LINEAR(x, weight, bias)
    return int8_linear(x, weight, bias)


def bf16(x):
    bits = x.astype(np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


def bf16_linear(x, weight, bias):
    return bf16(x) @ bf16(weight).T + bias


def embed_all(embedder, texts, linear):
    ref.linear = linear
    try:
        return [embedder.encode(text)[0] for text in texts]
    finally:
        ref.linear = EXACT_LINEAR


def main():
    fixture = json.load(open(os.path.join(ROOT, "tests", "fixtures", "embeddings", "reference.json")))
    texts = [s["text"] for s in fixture["sentences"]]
    if len(sys.argv) > 1:
        texts += json.load(open(sys.argv[1]))
    embedder = ref.SentenceEmbedder(MODEL_DIR)
    exact = embed_all(embedder, texts, EXACT_LINEAR)
    for name, linear in [
        ("bf16 operands", bf16_linear),
        ("int8 operands (symmetric)", int8_linear),
        ("int8 operands (activations asymmetric)", int8_asymmetric_linear),
        ("int8 except the FFN down projection", int8_except_down_linear),
    ]:
        got = embed_all(embedder, texts, linear)
        cosines = np.array([float(a @ b) for a, b in zip(exact, got)])
        below = int((cosines < 0.999).sum())
        print(
            f"{name}: {len(texts)} texts, cosine to exact min {cosines.min():.6f} "
            f"mean {cosines.mean():.6f}; below 0.999: {below}"
        )


if __name__ == "__main__":
    main()
