# The service's image: a builder stage that installs the dependencies into /opt/venv, and a
# slim runtime stage that runs them as the unprivileged user `app`. See docs/deployment.md.
#
#   docker build -t service .
#   docker run --rm -e DATABASE_URL=postgresql+asyncpg://... service service migrate
#   docker run -p 8000:8000 -e DATABASE_URL=... -e CURSOR_SECRET=... -e API_TOKENS=... service
#
# Every dependency ships binary wheels for linux/amd64 and linux/arm64, so neither stage
# needs a compiler or apt-get.

FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH="/opt/venv/bin:$PATH"

RUN python -m venv /opt/venv

WORKDIR /app
COPY pyproject.toml README.md ./
# The project is installed editable from /app, as `make install` does in a checkout:
# service/migrations.py finds the Alembic revisions beside the package (/app/alembic), which
# a site-packages install would break. Only a stub package is needed here, so this layer (all
# the dependencies) is rebuilt when pyproject.toml changes, not on every source change; the
# editable finder points at /app/service, where the runtime stage puts the real package.
RUN mkdir service \
    && touch service/__init__.py \
    && pip install --no-cache-dir --editable .


FROM python:3.11-slim

LABEL org.opencontainers.image.title="service" \
      org.opencontainers.image.description="GraphQL-style field selection on plain REST" \
      org.opencontainers.image.licenses="MIT"

# DATABASE_URL defaults to SQLite in the /data volume, so a bare `docker run` works on one
# machine (serve migrates and seeds it); set a postgresql+asyncpg:// URL for anything more.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:$PATH" \
    DATABASE_URL="sqlite+aiosqlite:////data/service.db"

# A fixed uid/gid, so volume ownership and Kubernetes' runAsUser can rely on it. /data is
# created before VOLUME, so a new named volume starts out owned by `app`.
RUN groupadd --system --gid 10001 app \
    && useradd --system --no-log-init --uid 10001 --gid app \
        --home-dir /app --shell /usr/sbin/nologin app \
    && install --directory --owner=app --group=app --mode=0750 /data

WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY alembic.ini ./
COPY alembic ./alembic
COPY service ./service
# The code stays root-owned (read-only to `app`); compiled once here, as `app` could not
# write the bytecode at startup.
RUN python -m compileall -q service alembic

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000

# python, not curl: the slim image has no curl. /healthz answers without the database.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]

# Migrations are their own command: `docker run IMAGE service migrate`, before serving.
CMD ["service", "serve", "--host", "0.0.0.0", "--port", "8000"]
