# syntax=docker/dockerfile:1
# emailkit API (default command) and worker (`emailkit worker`), for docker-compose.yml or any orchestrator.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A venv copied whole into the runtime stage keeps pip, build files and the source tree out of it.
RUN python -m venv /opt/emailkit
WORKDIR /src
# .dockerignore trims the context to what the package is built from.
COPY . .
RUN /opt/emailkit/bin/pip install -c constraints.txt .

FROM python:3.11-slim
ENV PATH=/opt/emailkit/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EMAILKIT_DATA_DIR=/var/lib/emailkit \
    EMAILKIT_OUTBOX_DIR=/var/lib/emailkit/outbox \
    EMAILKIT_DATABASE_URL=sqlite+aiosqlite:////var/lib/emailkit/emailkit.db
# Alone (`docker run -v emailkit:/var/lib/emailkit ...`) the image runs embedded, its SQLite in the volume;
# docker-compose.yml points it at PostgreSQL and Redis instead.
# A fixed uid so a volume's ownership survives image rebuilds.
RUN groupadd --system --gid 10001 emailkit \
    && useradd --system --uid 10001 --gid emailkit --home-dir /var/lib/emailkit --create-home \
        --shell /usr/sbin/nologin emailkit
COPY --from=build /opt/emailkit /opt/emailkit
USER emailkit
WORKDIR /var/lib/emailkit
EXPOSE 8000
# slim has no curl; the standard library is enough for a liveness probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["emailkit", "serve", "--host", "0.0.0.0", "--port", "8000"]
