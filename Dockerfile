# syntax=docker/dockerfile:1
# One image for every riskstream service; the command picks what it runs:
#   docker run riskstream worker velocity      (orchestrator | velocity | profile | geo | decision)
#   docker run riskstream topics create
ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: wheels for riskstream and every dependency
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY apps ./apps
COPY agents ./agents
COPY tables ./tables
RUN pip wheel --wheel-dir /wheels .

# ---- runtime: the wheels installed into a slim Python, run as an unprivileged user
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="riskstream" \
      org.opencontainers.image.description="Real-time transaction risk scoring on Kafka (Faust services)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RISKSTREAM_DATA_DIR=/var/lib/riskstream \
    RISKSTREAM_WEB_BIND=0.0.0.0 \
    RISKSTREAM_FETCH_MAX_WAIT_MS=500 \
    HOME=/tmp
RUN groupadd --system --gid 10001 riskstream \
 && useradd --system --uid 10001 --gid riskstream --no-create-home \
        --home-dir /var/lib/riskstream --shell /usr/sbin/nologin riskstream \
 && mkdir -p /var/lib/riskstream \
 && chown riskstream:riskstream /var/lib/riskstream
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels riskstream
COPY deploy/docker/healthcheck.py /usr/local/lib/riskstream/healthcheck.py

USER 10001:10001
WORKDIR /var/lib/riskstream
EXPOSE 6066 6067 6068 6069 6070
# Faust commits offsets and closes RocksDB on SIGTERM: give it time to stop (compose, k8s).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/usr/local/lib/riskstream/healthcheck.py"]
ENTRYPOINT ["riskstream"]
CMD ["worker", "orchestrator"]
