# oos-notify: the API, the scheduler and, without SMTP settings, the embedded capture mail server.
#
# For real use, give it your SMTP server, a signing key and the address people reach it at:
#   docker run -p 8000:8000 -v oos-data:/data \
#     -e OOS_NOTIFY_SMTP_HOST=smtp.example.org -e OOS_NOTIFY_SMTP_SECURITY=starttls \
#     -e OOS_NOTIFY_SMTP_USERNAME=oos-notify -e OOS_NOTIFY_SMTP_PASSWORD=... \
#     -e OOS_NOTIFY_SECRET_KEY=... -e OOS_NOTIFY_PUBLIC_BASE_URL=https://oos.example.org \
#     oos-notify
# Without SMTP settings it refuses to start (exit 2): the capture mailbox at /dev/mailbox would
# show every email, acknowledgement links included, to whoever reaches the port. For a demo on
# your machine, allow the mailbox by name and publish the port on the host's loopback only, then
# open http://127.0.0.1:8000/dev/mailbox:
#   docker run -e OOS_NOTIFY_DEV_MAILBOX_ON_NETWORK=true -p 127.0.0.1:8000:8000 oos-notify
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
