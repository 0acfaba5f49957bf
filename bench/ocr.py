#!/usr/bin/env python3
"""OCR benchmark: our converter child (`chroma-syncd extract-document`,
Tesseract through its C API, pages in parallel) against pytesseract (the
`tesseract` CLI per page, as people call it from Python), on the same
scanned pages, in one run.

Run:  ~/.cache/chroma-syncd/venv/bin/python bench/ocr.py [--pages 12] [--dpi 300]
Needs: the test venv (scripts/test-venv: reportlab, Pillow) with pytesseract
(`pip install pytesseract==0.3.13`, installed here if missing), poppler-utils
(pdftoppm), Tesseract (scripts/install-tesseract), libpdfium
(scripts/install-pdfium) and a chroma-syncd binary ($CHROMA_SYNCD_BIN, else
$CARGO_TARGET_DIR/release/chroma-syncd, else …/debug/chroma-syncd: OCR's
work is in Tesseract and PDFium, optimised C/C++ either way).

Material: tests/fixtures/ocr.py --pages N --dpi DPI: real prose set by
reportlab, rendered by pdftoppm, turned ±1.5–2°, blurred and speckled;
saved as page PNGs and as an image-only PDF of the same pages.

Routes, each timed as a whole (wall clock), peak RSS of the processes
doing the work (getrusage of children, each route in a fresh process):
  1. OCR of the page images:
     - pytesseract: image_to_string(Image.open(png)) page after page (and
       again with OMP_THREAD_LIMIT=1, Tesseract's OpenMP off as in ours).
     - ours: the pages as one multi-page TIFF (LZW) in one child.
     - ours, one child per PNG, one after another (a folder of images).
  2. The scanned PDF, whole conversion (render + OCR):
     - Python route: pdftoppm -r DPI -gray, then pytesseract per page.
     - ours: the PDF in one child (PDFium renders at DPI, OCR in parallel).
Word accuracy: in-order recall of the original's words (longest common
subsequence / expected words), and precision (LCS / words output).
Prints a markdown table with ratios; the CPU model and flags go first.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOME = os.path.expanduser("~")
TARGET = os.environ.get("CARGO_TARGET_DIR", f"{HOME}/.cache/chroma-syncd/target")
PDFIUM = os.environ.get("CHROMA_SYNCD_PDFIUM_LIBRARY",
                        f"{HOME}/.cache/chroma-syncd/pdfium/libpdfium.so")
TESSDATA = "/usr/share/tesseract-ocr/5/tessdata"


def binary():
    if os.environ.get("CHROMA_SYNCD_BIN"):
        return os.environ["CHROMA_SYNCD_BIN"]
    for profile in ("release", "debug"):
        path = os.path.join(TARGET, profile, "chroma-syncd")
        if os.path.exists(path):
            return path
    sys.exit("no chroma-syncd binary: cargo build --release --bin chroma-syncd")


def words(text):
    out = []
    for w in text.split():
        w = "".join(c for c in w.strip(".,;:!?\"'()[]|") if c.isalnum() or c in "-'").lower()
        w = w.strip("-'")
        if w:
            out.append(w)
    return out


def lcs(a, b):
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b):
            above = row[j + 1]
            row[j + 1] = diagonal + 1 if x == y else max(row[j + 1], row[j])
            diagonal = above
    return row[len(b)]


def accuracy(expected, text):
    got = words(text)
    common = lcs(expected, got)
    return common / max(1, len(expected)), common / max(1, len(got))


def ocr_settings(threads):
    return json.dumps({
        "library": "libtesseract.so.5", "tessdata": TESSDATA, "languages": ["eng"],
        "dpi": ARGS.dpi, "max_pixels_per_page": 40_000_000, "max_millis_per_page": 120_000,
        "max_pages": 1000, "threads": threads,
    })


def ours(path, fmt, threads):
    """One converter child, as the daemon runs it (sandboxed); its text."""
    with open(path, "rb") as f:
        data = f.read()
    result = subprocess.run(
        [binary(), "extract-document", "--format", fmt, "--max-extracted-bytes", str(64 << 20),
         "--pdfium-library", PDFIUM, "--sandbox", "--ocr", ocr_settings(threads)],
        input=data, capture_output=True, env={"OMP_THREAD_LIMIT": "1"}, check=True)
    answer = json.loads(result.stdout)
    if "Err" in answer:
        raise SystemExit(f"{path}: {answer['Err']}")
    sections = answer["Ok"]["sections"]
    return "\n\n".join(s["Text"]["markdown"] for s in sections if "Text" in s)


def route(name, material):
    """Runs one route in this (fresh) process: its text and seconds."""
    pages = material["pages"]
    threads = os.cpu_count() or 1
    started = time.perf_counter()
    if name in ("pytesseract-images", "pytesseract-images-omp1"):
        if name.endswith("omp1"):
            # Tesseract's OpenMP held to one thread, as ours is.
            os.environ["OMP_THREAD_LIMIT"] = "1"
        import pytesseract
        from PIL import Image
        text = "\n".join(pytesseract.image_to_string(Image.open(p)) for p in pages)
    elif name == "ours-tiff":
        text = ours(material["tiff"], "tiff", threads)
    elif name == "ours-png-each":
        text = "\n".join(ours(p, "png", 1) for p in pages)
    elif name == "python-pdf":
        import glob
        import pytesseract
        from PIL import Image
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["pdftoppm", "-r", str(ARGS.dpi), "-gray", "-png", material["pdf"],
                            os.path.join(tmp, "p")], check=True)
            text = "\n".join(pytesseract.image_to_string(Image.open(p))
                             for p in sorted(glob.glob(os.path.join(tmp, "p*.png"))))
    elif name == "ours-pdf":
        text = ours(material["pdf"], "pdf", threads)
    else:
        raise SystemExit(f"unknown route {name}")
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"text": text, "seconds": seconds, "peak_rss_kib": rss}


def cpu():
    model, flags = "", []
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    wanted = [f for f in flags if f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw",
                                        "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile")]
    return model, wanted


def main():
    if ARGS.route:
        material = json.loads(ARGS.material)
        print(json.dumps(route(ARGS.route, material)))
        return
    try:
        import pytesseract  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "pytesseract==0.3.13"],
                       check=True)
    from PIL import Image
    out = tempfile.mkdtemp(prefix="ocr-bench-")
    subprocess.run([sys.executable, os.path.join(ROOT, "tests/fixtures/ocr.py"), out,
                    "--pages", str(ARGS.pages), "--dpi", str(ARGS.dpi), "--no-hostile"], check=True)
    with open(os.path.join(out, "expected.json")) as f:
        expected = json.load(f)
    expected_words = [w for page in expected["scanned.pdf"]["pages"] for w in page]
    pages = [os.path.join(out, f"page-{i + 1}.png") for i in range(ARGS.pages)]
    images = [Image.open(p) for p in pages]
    tiff = os.path.join(out, "all.tiff")
    images[0].save(tiff, save_all=True, append_images=[i.copy() for i in images[1:]],
                   compression="tiff_lzw")
    material = {"pages": pages, "tiff": tiff, "pdf": os.path.join(out, "scanned.pdf")}
    model, flags = cpu()
    import pytesseract
    print(f"CPU: {model}; {os.cpu_count()} CPUs; flags: {' '.join(flags)}")
    print(f"Tesseract {pytesseract.get_tesseract_version()}, pytesseract 0.3.13, "
          f"binary {binary()}, {platform.python_version()}")
    print(f"{ARGS.pages} pages, letter size, scanned at {ARGS.dpi} dpi "
          f"({images[0].size[0]}x{images[0].size[1]} px after rotation)\n")
    results = {}
    for name in ("pytesseract-images", "pytesseract-images-omp1", "ours-tiff", "ours-png-each",
                 "python-pdf", "ours-pdf"):
        best = None
        for _ in range(ARGS.runs):
            done = subprocess.run([sys.executable, __file__, "--route", name,
                                   "--material", json.dumps(material), "--dpi", str(ARGS.dpi)],
                                  capture_output=True, text=True, check=True)
            run = json.loads(done.stdout)
            if best is None or run["seconds"] < best["seconds"]:
                best = run
        recall, precision = accuracy(expected_words, best["text"])
        best.update(recall=recall, precision=precision, pages_per_s=ARGS.pages / best["seconds"])
        results[name] = best
    print("| route | pages/s | vs Python | in-order word recall | precision | peak RSS |")
    print("|---|---|---|---|---|---|")
    pairs = {"pytesseract-images": "pytesseract-images",
             "pytesseract-images-omp1": "pytesseract-images", "ours-tiff": "pytesseract-images",
             "ours-png-each": "pytesseract-images", "python-pdf": "python-pdf",
             "ours-pdf": "python-pdf"}
    for name, r in results.items():
        base = results[pairs[name]]
        print(f"| {name} | {r['pages_per_s']:.2f} | {r['pages_per_s'] / base['pages_per_s']:.2f}x "
              f"| {r['recall']:.3f} | {r['precision']:.3f} | {r['peak_rss_kib'] / 1024:.0f} MB |")


parser = argparse.ArgumentParser()
parser.add_argument("--pages", type=int, default=12)
parser.add_argument("--dpi", type=int, default=300)
parser.add_argument("--runs", type=int, default=1)
parser.add_argument("--route")
parser.add_argument("--material")
ARGS = parser.parse_args()
main()
