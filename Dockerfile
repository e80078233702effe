# syntax=docker/dockerfile:1
#
# runstate: one image for every process of the system. The entrypoint is the `runstate`
# command, so the container's command picks the process:
#
#   docker run IMAGE api | scheduler | worker monitoring | worker status-change
#                        | worker notification | migrate | up (the default)
#
# Stage 1 (builder) installs the locked dependencies with uv into /app/.venv, then the
# project itself as a regular, non-editable package. Stage 2 (runtime) is the slim Python
# image plus that environment and nothing else: no uv, no compiler, no sources, no tests.
# What is in the image and its size target: docs/deployment.md, "The image".

FROM python:3.11-slim-bookworm AS builder

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/uv

# Compile the bytecode at build time (the runtime user cannot write __pycache__), copy out
# of the cache mount instead of hard-linking, and use the image's Python, never a download.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /src

# The dependency layer: rebuilt only when pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --no-editable

# The source layer: the project is built into a wheel and installed into the environment,
# which then no longer refers to /src.
COPY README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable


FROM python:3.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="runstate" \
      org.opencontainers.image.description="Uptime monitoring: API, scheduler and workers in one image" \
      org.opencontainers.image.licenses="MIT"

# A fixed, numeric, unprivileged user (UID/GID 10001) that owns only /data, where
# `runstate up` keeps its SQLite file and a dev-mode API keeps its generated JWT key. /data
# is also writable by group 0, as platforms that run images under an arbitrary UID (with
# GID 0, as OpenShift does) need.
RUN groupadd --system --gid 10001 runstate \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
        --home-dir /data --no-create-home --shell /usr/sbin/nologin runstate \
    && install -d -o 10001 -g 0 -m 0770 /data

# The environment, owned by root: the process can read its code but not change it.
COPY --from=builder /app/.venv /app/.venv

ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    RUNSTATE_DATA_DIR=/data

WORKDIR /app
USER 10001:10001

# 3001: the API (PORT). 9100: a scheduler's or worker's Prometheus /metrics (METRICS_PORT).
EXPOSE 3001 9100

# Liveness of the API (`api` and `up`), with the standard library only: no curl in the image.
# Scheduler and workers serve no API: docker-compose.yml replaces this check with one on
# their metrics port (see docs/deployment.md).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + (os.environ.get('PORT') or '3001') + '/api/v1/health', timeout=4)"]

ENTRYPOINT ["runstate"]
CMD ["up"]
