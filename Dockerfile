# imagine-bot: Discord and/or Slack, configured by environment variables (see .env.example).
# compose.yaml runs two replicas of this image on PostgreSQL; alone it keeps SQLite in /data.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DATABASE_URL=sqlite:////data/imagine-bot.db \
    IMAGINE_METRICS_PORT=9100 \
    IMAGINE_METRICS_HOST=0.0.0.0

# GET /metrics (Prometheus), /healthz and /readyz on port 9100; the health check asks
# /healthz with Python (the slim image has no curl). Set IMAGINE_METRICS_PORT to move it.
EXPOSE 9100
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('IMAGINE_METRICS_PORT') or '9100'), timeout=4)"]

WORKDIR /app

# Dependencies first, in their own layer: read from pyproject.toml alone, so a code change
# does not reinstall them. (They include asyncpg, the PostgreSQL driver.)
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the project itself (README.md is its package description).
COPY README.md ./
COPY bot ./bot
COPY adapters ./adapters
COPY storage ./storage
# /app/data points at the volume, so DATABASE_URL=sqlite:///./data/… from a copied
# .env.example also lands in /data (the imagine user cannot write to /app).
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 imagine \
    && mkdir -p /data && chown imagine:imagine /data \
    && ln -s /data /app/data

USER imagine
VOLUME ["/data"]
# Slack HTTP mode listens here (Socket Mode and Discord need no inbound port).
EXPOSE 3000
# SIGTERM: running jobs get IMAGINE_SHUTDOWN_GRACE seconds, the rest go to other replicas
# (or resume on the next start). Give the container longer than that before SIGKILL:
# `docker run --stop-timeout 30 …` (Docker's default is 10 s), `stop_grace_period` in compose.
STOPSIGNAL SIGTERM
CMD ["imagine-bot", "run"]
