# oos-notify: the API, the scheduler and, without SMTP settings, the embedded capture mail server.
#
# For real use, give it your SMTP server, a signing key and the address people reach it at:
#   docker run -p 8000:8000 -v oos-data:/data \
#     -e OOS_NOTIFY_SMTP_HOST=smtp.example.org -e OOS_NOTIFY_SMTP_PORT=587 \
#     -e OOS_NOTIFY_SMTP_USERNAME=oos-notify -e OOS_NOTIFY_SMTP_PASSWORD=... \
#     -e OOS_NOTIFY_SECRET_KEY=... -e OOS_NOTIFY_PUBLIC_BASE_URL=https://oos.example.org \
#     -e OOS_NOTIFY_MAIL_FROM=oos-notify@example.org oos-notify
# Without SMTP settings it refuses to start (exit 2): the capture mailbox at /dev/mailbox would
# show every email, acknowledgement links included, to whoever reaches the port. For a demo on
# your machine, allow the mailbox by name and publish the port on the host's loopback only, then
# open http://127.0.0.1:8000/dev/mailbox:
#   docker run -e OOS_NOTIFY_DEV_MAILBOX_ON_NETWORK=true -p 127.0.0.1:8000:8000 oos-notify
# It writes only to /data (the SQLite file) and /tmp, so it runs with a read-only root:
#   docker run --read-only --tmpfs /tmp -v oos-data:/data ... oos-notify
# BASE_IMAGE: another Python 3.11 image with pip and useradd (CI builds on a local stand-in).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OOS_NOTIFY_HOST=0.0.0.0 \
    OOS_NOTIFY_PORT=8000 \
    OOS_NOTIFY_DATABASE_URL=sqlite:////data/oos_notify.db

WORKDIR /app
# The versions in deploy/constraints.txt, not whatever was newest on the day of the build.
COPY pyproject.toml README.md deploy/constraints.txt ./
COPY oos_notify ./oos_notify
RUN pip install --no-cache-dir --root-user-action=ignore --constraint constraints.txt . \
    && rm -rf build oos_notify.egg-info \
    && useradd --system --home-dir /app --no-create-home --shell /usr/sbin/nologin oos \
    && mkdir /data && chown oos /data
COPY config ./config
COPY templates ./templates

USER oos
VOLUME ["/data"]
EXPOSE 8000
# On the port the process listens on, also when OOS_NOTIFY_PORT is changed.
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('OOS_NOTIFY_PORT', '8000'), timeout=2)" || exit 1
CMD ["oos-notify", "serve"]
