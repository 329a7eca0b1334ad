# oos-notify: the API, the scheduler and (without SMTP settings) the embedded capture mail server.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OOS_NOTIFY_HOST=0.0.0.0 \
    OOS_NOTIFY_PORT=8000 \
    OOS_NOTIFY_DATABASE_URL=sqlite:////data/oos_notify.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY oos_notify ./oos_notify
RUN pip install --no-cache-dir . && useradd --system --home /app oos && mkdir /data && chown oos /data
COPY config ./config
COPY templates ./templates

USER oos
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)" || exit 1
CMD ["oos-notify", "serve"]
