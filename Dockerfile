FROM python:3.11-slim

# METRICS_HOST: inside a container the endpoint must listen beyond loopback to be
# published; it stays off until METRICS_PORT is set.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DATABASE_PATH=/data/bot.db METRICS_HOST=0.0.0.0

RUN useradd --create-home --uid 10001 bot && mkdir /data && chown bot:bot /data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY adapters ./adapters
RUN pip install --no-cache-dir .

USER bot
VOLUME ["/data"]
# 9464: the operator endpoint as README and compose.yaml set it (METRICS_PORT);
# 3000: Slack's HTTP mode (SLACK_HTTP_PORT). Neither listens unless configured.
EXPOSE 9464 3000
# Ready (/readyz 200) when METRICS_PORT is set; with the endpoint off there is nothing
# to ask, so the check passes and the container's state is its process's.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; p = os.environ.get('METRICS_PORT', '').strip(); h = os.environ.get('METRICS_HOST', '').strip(); h = '127.0.0.1' if h in ('', '0.0.0.0', '::') else h; p and u.urlopen(f'http://{h}:{p}/readyz', timeout=4)"]
CMD ["python", "-m", "bot"]
