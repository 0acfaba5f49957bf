#!/usr/bin/env python3
"""Document conversion benchmark: our `chroma-syncd extract-document` child vs
Python peers (pypdf, pymupdf4llm, markitdown, and unstructured where it imports).

Run:  python3 bench/documents.py
It re-executes itself under the bench venv (~/.cache/chroma-syncd/bench-venv,
or $CHROMA_SYNCD_BENCH_VENV), creating it if missing. Needs a release build
(CARGO_TARGET_DIR=~/.cache/chroma-syncd/target cargo build --release --bin
chroma-syncd) and libpdfium (scripts/install-pdfium). DOCS_BENCH_KEEP=DIR keeps
the corpus and every tool's output in DIR instead of a temp dir.

Corpus (deterministic, generated here): 3 PDFs x 100 pages (reportlab platypus:
headings, paragraphs of unique sentences, a table every 5th page, running
header and footer with page numbers), a .docx, a .pptx (titles, bullets,
notes) and a .xlsx (2000 rows). The known text of each file (its sentences,
headings and cells, in order) is recorded when it is generated.

Measures, per tool and format: throughput (PDF pages/s or documents/s; best of
3 runs per file (1 if a run takes over 30 s), each in a fresh process: for ours the whole subprocess
wall time, which is what the daemon pays per file; for peers the in-process
conversion time, excluding interpreter start and imports), peak RSS (max
max RSS of those processes, via GNU time), word F1 (multiset of lowercased
alphanumeric words of the output vs the known text), order (longest run of known
sentences found, whitespace-normalized, at increasing positions / their number),
and for PDFs the fraction of pages whose running header / footer leaked into
the output. Prints a markdown table; writes bench/results/documents.json.
"""

import json, os, random, re, subprocess, sys, tempfile, time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOME = os.path.expanduser("~")
VENV = os.environ.get("CHROMA_SYNCD_BENCH_VENV", f"{HOME}/.cache/chroma-syncd/bench-venv")
TARGET = os.environ.get("CARGO_TARGET_DIR", f"{HOME}/.cache/chroma-syncd/target")
BINARY = os.path.join(TARGET, "release", "chroma-syncd")
PDFIUM = os.environ.get("CHROMA_SYNCD_PDFIUM_LIBRARY", f"{HOME}/.cache/chroma-syncd/pdfium/libpdfium.so")
PACKAGES = ["pypdf", "pymupdf4llm==1.28.2",  # 2.0 on PyPI is an empty package
            "markitdown[pdf,docx,pptx,xlsx]", "reportlab", "python-docx", "python-pptx", "openpyxl"]
RUNS, PDFS, PAGES, SLOW = 3, 3, 100, 30.0

if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
    if not os.path.exists(f"{VENV}/bin/python"):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([f"{VENV}/bin/pip", "install", "--quiet", *PACKAGES], check=True)
    os.execv(f"{VENV}/bin/python", [f"{VENV}/bin/python", os.path.abspath(__file__), *sys.argv[1:]])

# ---------------------------------------------------------------- corpus
RNG = random.Random(20240601)
ADJ = "amber brisk calm dusky eager frosty gentle hollow ivory jolly keen lucid mellow nimble olive placid quiet rustic silent tawny umber vivid windy young zesty".split()
NOUN = "falcon harbor meadow lantern orchard canyon beacon glacier willow compass quarry thistle ember pebble summit cedar ferry marble otter prairie".split()
VERB = "crosses guards follows measures borrows gathers circles paints reaches shelters".split()
PLACE = "Lisbon Oslo Quito Tunis Hanoi Lima Riga Perth Accra Dakar Sofia Bern".split()
_n = [0]

def sentence():
    _n[0] += 1
    r = RNG.choice
    return (f"The {r(ADJ)} {r(NOUN)} {r(VERB)} the {r(ADJ)} {r(NOUN)} near {r(PLACE)} "
            f"in record {_n[0]}, while a {r(ADJ)} {r(NOUN)} waits.")

def heading(kind, i):
    return f"{kind} {i}: {RNG.choice(ADJ).title()} {RNG.choice(NOUN).title()} Review"

def table_rows(n):
    rows = [["Region", "Quarter", "Units", "Remark"]]
    for _ in range(n):
        rows.append([RNG.choice(PLACE), f"Q{RNG.randint(1, 4)}", str(RNG.randint(100, 99999)),
                     f"{RNG.choice(ADJ)} {RNG.choice(NOUN)}"])
    return rows

def make_pdf(path, k):
    from reportlab.lib.pagesizes import letter
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Table
    ss, story, known = getSampleStyleSheet(), [], []
    for p in range(1, PAGES + 1):
        h = heading("Section", f"{k}.{p}")
        story.append(Paragraph(h, ss["Heading2"])); known.append(h)
        for _ in range(3 if p % 5 == 0 else 5):
            sents = [sentence() for _ in range(3)]
            story.append(Paragraph(" ".join(sents), ss["BodyText"])); known += sents
        if p % 5 == 0:
            rows = table_rows(5)
            story.append(Table(rows)); known += [c for row in rows for c in row]
        if p < PAGES:
            story.append(PageBreak())

    def page_deco(canvas, doc):
        canvas.saveState(); canvas.setFont("Helvetica", 8)
        canvas.drawString(72, letter[1] - 40, f"ACME Running Header, Quarterly Report {k}")
        canvas.drawRightString(letter[0] - 72, 30, f"Page {doc.page} of {PAGES}")
        canvas.restoreState()
    SimpleDocTemplate(path, pagesize=letter, title=f"Quarterly Report {k}").build(
        story, onFirstPage=page_deco, onLaterPages=page_deco)
    return known

def make_docx(path):
    import docx
    d, known = docx.Document(), []
    for i in range(50):
        if i % 10 == 0:
            h = heading("Chapter", i // 10 + 1); d.add_heading(h, level=1); known.append(h)
        sents = [sentence() for _ in range(3)]
        d.add_paragraph(" ".join(sents)); known += sents
        if i == 25:
            rows = table_rows(6)
            t = d.add_table(rows=len(rows), cols=4)
            for r, row in enumerate(rows):
                for c, v in enumerate(row):
                    t.cell(r, c).text = v
            known += [c for row in rows for c in row]
    d.save(path)
    return known

def make_pptx(path):
    from pptx import Presentation
    prs, known = Presentation(), []
    for i in range(30):
        s = prs.slides.add_slide(prs.slide_layouts[1])
        t = heading("Slide", i + 1); s.shapes.title.text = t; known.append(t)
        body = s.placeholders[1].text_frame
        for j in range(4):
            b = sentence(); known.append(b)
            (body.paragraphs[0] if j == 0 else body.add_paragraph()).text = b
        n = sentence(); s.notes_slide.notes_text_frame.text = n; known.append(n)
    prs.save(path)
    return known

def make_xlsx(path):
    import openpyxl
    wb = openpyxl.Workbook(); ws = wb.active; ws.title = "Ledger"
    known = ["Id", "Name", "City", "Units"]; ws.append(known)
    for i in range(1, 2001):
        row = [f"R{i:05d}", f"{RNG.choice(ADJ)} {RNG.choice(NOUN)}", RNG.choice(PLACE), RNG.randint(10, 9999)]
        ws.append(row); known += [str(v) for v in row]
    wb.save(path)
    return known

# ---------------------------------------------------------------- running tools
PEER = r"""
import json, resource, sys, time
tool, path, out = sys.argv[1:4]
if tool == "pypdf":
    from pypdf import PdfReader
    f = lambda: "\n".join(p.extract_text() for p in PdfReader(path).pages)
elif tool.startswith("pymupdf4llm"):
    import pymupdf4llm  # uses pymupdf-layout (its default) when installed
    if tool.endswith("nolayout"):
        pymupdf4llm.use_layout(False)
    f = lambda: pymupdf4llm.to_markdown(path, show_progress=False)
elif tool == "markitdown":
    from markitdown import MarkItDown
    md = MarkItDown()
    f = lambda: md.convert(path).text_content
elif tool == "unstructured":
    from unstructured.partition.auto import partition
    f = lambda: "\n\n".join(str(e) for e in partition(filename=path, strategy="fast"))
t0 = time.perf_counter(); text = f(); dt = time.perf_counter() - t0
open(out, "w").write(text)
print(json.dumps({"seconds": dt}))
"""

def run(argv, stdin_path, out_path):
    """Runs argv in a fresh process; returns (wall seconds, stdout, peak RSS KiB).
    Through GNU time: a child forked from this (large) process would report
    our RSS as its ru_maxrss, as Linux keeps the high-water mark across exec."""
    with open(stdin_path, "rb") as fin, open(out_path + ".stdout", "wb") as fout:
        t0 = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out_path + ".rss", *argv], stdin=fin, stdout=fout,
                       stderr=open(out_path + ".stderr", "wb"))
        wall = time.perf_counter() - t0
    rss = int(open(out_path + ".rss").read().split()[-1])
    return wall, open(out_path + ".stdout", encoding="utf-8", errors="replace").read(), rss

def ours_text(doc):
    if "Ok" not in doc:
        return None, doc.get("Err", str(doc))
    parts = []
    for s in doc["Ok"]["sections"]:
        if "Text" in s:
            parts.append(s["Text"]["markdown"])
        elif "Table" in s:
            t = s["Table"]
            rows = [r if isinstance(r, str) else " | ".join(map(str, r)) for r in t["rows"]]
            parts.append("\n".join([t.get("sheet") or "", t.get("header") or "", *rows]))
    return "\n\n".join(parts), None

def convert(tool, fmt, path, out):
    """Best-of-RUNS seconds, peak RSS (KiB), text (of the first run), error."""
    best, rss, text, err = float("inf"), 0, None, None
    for i in range(RUNS):
        if tool == "ours":
            wall, stdout, maxrss = run([BINARY, "extract-document", "--format", fmt, "--max-extracted-bytes",
                                        "1000000000", "--pdfium-library", PDFIUM], path, out)
            seconds = wall
            try:
                t, err = ours_text(json.loads(stdout))
            except ValueError:
                t, err = None, f"bad JSON: {stdout[:200]!r}"
        else:
            wall, stdout, maxrss = run([sys.executable, "-c", PEER, tool, path, out], os.devnull, out)
            try:
                seconds = json.loads(stdout.strip().splitlines()[-1])["seconds"]
                t = open(out, encoding="utf-8").read()
            except (ValueError, IndexError, OSError):
                seconds, t, err = wall, None, "failed: " + (open(out + ".stderr").read().strip().splitlines() or [""])[-1][:200]
        if t is None:
            return None, maxrss, None, err
        best, rss = min(best, seconds), max(rss, maxrss)
        if i == 0:
            text = t
            open(out, "w", encoding="utf-8").write(t)
        if seconds > SLOW:  # a slow peer's variance is small next to its time: one run
            break
    return best, rss, text, None

# ---------------------------------------------------------------- fidelity
def words(s):
    return Counter(re.findall(r"[a-z0-9]+", s.lower()))

def f1(text, known):
    got, want = words(text), words(" ".join(known))
    hit = sum((got & want).values())
    if not hit:
        return 0.0
    p, r = hit / sum(got.values()), hit / sum(want.values())
    return 2 * p * r / (p + r)

def order(text, known):
    """Longest increasing run of first-occurrence positions of the known
    sentences (items of 4+ words; all items if none are) / their number."""
    import bisect
    norm = " ".join(text.split())
    items = [k for k in known if len(k.split()) >= 4] or known
    tails = []
    for i in (norm.find(" ".join(k.split())) for k in items):
        if i >= 0:
            j = bisect.bisect_left(tails, i)
            tails[j:j + 1] = [i]
    return len(tails) / len(items)

def leaks(text, pages):
    low = " ".join(text.lower().split())
    return (low.count("acme running header") / pages, len(re.findall(r"page \d+ of \d+", low)) / pages)

# ---------------------------------------------------------------- main
def main():
    if not os.access(BINARY, os.X_OK):
        sys.exit(f"no release binary at {BINARY}")
    if not os.path.exists(PDFIUM):
        subprocess.run([os.path.join(ROOT, "scripts", "install-pdfium")], check=True)
    peers_pdf, peers_office = ["pypdf", "pymupdf4llm", "pymupdf4llm-nolayout", "markitdown"], ["markitdown"]
    for mod, peers in [("unstructured.partition.pdf", peers_pdf), ("unstructured.partition.docx", peers_office)]:
        try:  # unstructured[pdf] needs unstructured-inference (torch): often not installed
            __import__(mod); peers.append("unstructured")
        except ImportError:
            print(f"unstructured skipped: {mod} does not import", file=sys.stderr)
    keep = os.environ.get("DOCS_BENCH_KEEP")
    tmp = keep or tempfile.mkdtemp(prefix="docs-bench-")
    os.makedirs(tmp, exist_ok=True)
    from pypdf import PdfReader
    corpus = {}  # fmt -> [(path, known, pages)]
    for k in range(1, PDFS + 1):
        p = os.path.join(tmp, f"report{k}.pdf")
        known = make_pdf(p, k)
        corpus.setdefault("pdf", []).append((p, known, len(PdfReader(p).pages)))
    for fmt, make in [("docx", make_docx), ("pptx", make_pptx), ("xlsx", make_xlsx)]:
        p = os.path.join(tmp, f"doc.{fmt}")
        corpus[fmt] = [(p, make(p), 1)]
    results = []
    for fmt, files in corpus.items():
        for tool in ["ours"] + (peers_pdf if fmt == "pdf" else peers_office):
            secs, rss, f1s, ords, hdr, ftr, errs = 0.0, 0, [], [], [], [], []
            for path, known, pages in files:
                out = os.path.join(tmp, f"{os.path.basename(path)}.{tool}.txt")
                best, maxrss, text, err = convert(tool, fmt, path, out)
                rss = max(rss, maxrss)
                if err:
                    errs.append(f"{os.path.basename(path)}: {err}"); continue
                secs += best; f1s.append(f1(text, known)); ords.append(order(text, known))
                if fmt == "pdf":
                    h, f = leaks(text, pages); hdr.append(h); ftr.append(f)
            units = sum(pg for *_, pg in files) if fmt == "pdf" else len(files)
            ok = len(f1s) == len(files)
            r = {"tool": tool, "format": fmt, "files": len(files), "units": units,
                 "unit": "pages" if fmt == "pdf" else "docs", "seconds": round(secs, 4) if ok else None,
                 "per_second": round(units / secs, 2) if ok and secs else None, "peak_rss_mb": round(rss / 1024, 1),
                 "word_f1": round(sum(f1s) / len(f1s), 4) if f1s else None,
                 "order": round(sum(ords) / len(ords), 4) if ords else None, "errors": errs}
            if fmt == "pdf":
                r["header_leak"] = round(sum(hdr) / len(hdr), 3) if hdr else None
                r["footer_leak"] = round(sum(ftr) / len(ftr), 3) if ftr else None
            results.append(r)
            print(f"  {fmt} {tool}: {r}", file=sys.stderr, flush=True)
    base = next((r["per_second"] for r in results if r["tool"] == "pypdf"), None)
    print("\n| format | tool | throughput | vs pypdf | peak RSS MB | word F1 | order | header/footer leak |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        thr = f"{r['per_second']} {r['unit']}/s" if r["per_second"] else "error"
        vs = f"{r['per_second'] / base:.1f}x" if r["format"] == "pdf" and base and r["per_second"] else ""
        leak = f"{r['header_leak']}/{r['footer_leak']}" if r["format"] == "pdf" else ""
        print(f"| {r['format']} | {r['tool']} | {thr} | {vs} | {r['peak_rss_mb']} | {r['word_f1']} | {r['order']} | {leak} |")
    for r in results:
        for e in r["errors"]:
            print(f"error: {r['tool']} {r['format']} {e}")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    meta = {"runs_per_file": RUNS, "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "corpus_dir": tmp if keep else None,
            "pdf_pages": [pg for *_, pg in corpus["pdf"]], "python": sys.version.split()[0]}
    with open(os.path.join(ROOT, "bench", "results", "documents.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    if not keep:
        subprocess.run(["rm", "-rf", tmp])

if __name__ == "__main__":
    main()
