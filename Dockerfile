# imagine-bot: Discord and/or Slack, configured by environment variables (see .env.example).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DATABASE_URL=sqlite:////data/imagine-bot.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY adapters ./adapters
COPY storage ./storage
RUN pip install . \
    && useradd --create-home --uid 10001 imagine \
    && mkdir -p /data && chown imagine:imagine /data

USER imagine
VOLUME ["/data"]
# Slack HTTP mode listens here (Socket Mode and Discord need no inbound port).
EXPOSE 3000
STOPSIGNAL SIGTERM
CMD ["imagine-bot", "run"]
