#!/usr/bin/env bash
# The container image, built from the Dockerfile and run as a user would, without a Docker daemon:
# Debian's buildah builds it and runs its commands (chroot isolation, the host's network). Run as
# root, from any directory:
#
#   bash .ci/image.sh                        # build, then the checks below; exit 1 on any failure
#   bash .ci/image.sh --refresh-constraints  # rewrite deploy/constraints.txt from a clean install
#
# python:3.11-slim cannot be pulled here, so the image is built FROM a stand-in of it: Debian
# bookworm's minimal system with its Python 3.11 and pip (mmdebstrap), committed as
# localhost/python:3.11-slim in a storage of this script's own. The stand-in is kept for the next
# run on this machine under a key of its recipe, the host's CA bundle and the ISO week (so it takes
# Debian's updates weekly); a new machine builds it.
#
# Checks: the compose file and the systemd units as far as this machine can read them, then the
# image's commands: without SMTP settings (exit 2 and the reason); the demo (ready, /dev/mailbox);
# the demo again with a read-only root filesystem; real use on PostgreSQL (OOS_TEST_PG_URL, as
# .ci/start-postgres.sh exports it; one is started when unset) with mail to an SMTP sink on the
# host: `db upgrade`, an API key, `api`, and `worker` on a read-only root, one event, its notice
# delivered.
# The Python that runs the sink needs aiosmtpd (the project's venv has it): PYTHON, else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export BUILDAH_ISOLATION=chroot
# overlay (this machine's kernel allows it; far faster than copying each container), or
# STORAGE_DRIVER=vfs where it does not. Each driver has a storage of its own.
DRIVER=${STORAGE_DRIVER:-overlay}
STORE=/var/lib/oos-notify-ci/containers-$DRIVER
bah() { buildah --root "$STORE/root" --runroot "$STORE/run" --storage-driver "$DRIVER" "$@"; }
BASE=localhost/python:3.11-slim
IMAGE=localhost/oos-notify:ci-$$
WORK=$(mktemp -d /tmp/oos-image.XXXXXX)
containers=()
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    for ctr in "${containers[@]}"; do
        mountpoint -q "$WORK/ro-$ctr" 2>/dev/null && umount -R "$WORK/ro-$ctr"
        bah rm "$ctr" >/dev/null 2>&1 || true
    done
    bah rmi "$IMAGE" >/dev/null 2>&1 || true
    if [[ -n ${OWN_PG:-} ]]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA_TMP" -m immediate stop >/dev/null
    fi
    # A root left mounted holds the host's /dev: never delete through it.
    if grep -qF " $WORK/" /proc/mounts; then
        echo "image: mounts left under $WORK; not removed" >&2
    else
        rm -rf --one-file-system "$WORK"
    fi
}
trap cleanup EXIT
fail() { echo "image: FAILED: $*" >&2; exit 1; }
pass() { echo "image: ok: $*"; }

# A free port on 127.0.0.1, from $1 upwards: other checkouts' CI runs may share the machine.
free_port() {
    local port=$1
    while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
    echo "$port"
}

# Waits up to $2 seconds for $1 to answer 200.
wait_ok() {
    local deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null "$1" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

base_key() {
    {
        declare -f build_base
        sha256sum /etc/ssl/certs/ca-certificates.crt
        date -u +%G-W%V
    } | sha256sum | cut -c1-16
}

build_base() {
    mmdebstrap --quiet --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates,passwd \
        bookworm "$WORK/rootfs.tar"
    local ctr
    ctr=$(bah from scratch)
    containers+=("$ctr")
    bah add "$ctr" "$WORK/rootfs.tar" / >/dev/null
    rm "$WORK/rootfs.tar"
    # The build machine's CA bundle and resolver, so pip reaches the package index from here.
    bah copy "$ctr" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
    bah copy "$ctr" /etc/resolv.conf /etc/resolv.conf >/dev/null
    # As in python:3.11-slim: python and pip on /usr/local/bin, pip may install system-wide.
    bah run "$ctr" -- sh -c 'ln -s /usr/bin/python3 /usr/local/bin/python &&
        ln -s /usr/bin/pip3 /usr/local/bin/pip && rm /usr/lib/python3.11/EXTERNALLY-MANAGED'
    bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd python3 --label "org.oos-notify.stand-in=$1" "$ctr"
    bah commit --quiet --rm "$ctr" "$BASE" >/dev/null
    containers=("${containers[@]/$ctr/}")
}

SECONDS=0
key=$(base_key)
if [[ $(bah inspect --type image --format '{{index .OCIv1.Config.Labels "org.oos-notify.stand-in"}}' "$BASE" 2>/dev/null) == "$key" ]]; then
    echo "image: stand-in base $BASE ($key) kept from an earlier run"
else
    bah rmi "$BASE" >/dev/null 2>&1 || true
    build_base "$key"
    echo "image: stand-in base $BASE ($key) built in ${SECONDS} s"
fi

if [[ ${1:-} == --refresh-constraints ]]; then
    ctr=$(bah from "$BASE")
    containers+=("$ctr")
    header=$(grep '^#' deploy/constraints.txt)
    git archive HEAD pyproject.toml README.md oos_notify | tar -x -C "$WORK"
    bah run --network host -v "$WORK:/src:ro" "$ctr" -- sh -c 'cp -r /src /tmp/src &&
        python -m venv /tmp/venv && /tmp/venv/bin/pip install -q --no-cache-dir /tmp/src &&
        /tmp/venv/bin/pip freeze --exclude oos-notify' >"$WORK/frozen"
    printf '%s\n' "$header" >deploy/constraints.txt
    cat "$WORK/frozen" >>deploy/constraints.txt
    echo "image: wrote deploy/constraints.txt ($(wc -l <"$WORK/frozen") packages)"
    exit 0
fi

# The deployment files, as far as this machine can read them (no daemon, no systemd running).
SECONDS=0
POSTGRES_PASSWORD=x OOS_NOTIFY_SECRET_KEY=x OOS_NOTIFY_PUBLIC_BASE_URL=https://oos.example \
    OOS_NOTIFY_SMTP_HOST=smtp.example OOS_NOTIFY_MAIL_FROM=oos-notify@example.org \
    docker-compose -f deploy/compose.yaml config -q || fail "deploy/compose.yaml does not validate"
pass "deploy/compose.yaml validates (docker-compose $(docker-compose version --short) config)"
# Verified under a root of their own: systemd's units, the three, a stand-in for the installed
# command (ExecStart must be executable) and an empty settings file. It reports each problem
# (an unknown key, a bad value) on a line of its own, with exit 0: any line fails.
units=$WORK/units
mkdir -p "$units/etc/systemd/system" "$units/etc/oos-notify" "$units/srv/oos-notify/venv/bin" \
    "$units/usr/lib/systemd"
cp -r /usr/lib/systemd/system "$units/usr/lib/systemd/"
cp deploy/systemd/*.service "$units/etc/systemd/system/"
cp /bin/true "$units/srv/oos-notify/venv/bin/oos-notify"
: >"$units/etc/oos-notify/env"
systemd-analyze verify --root="$units" --man=no oos-notify-migrate.service \
    oos-notify-api@1.service oos-notify-worker@1.service >"$WORK/verify.log" 2>&1 || true
if [[ -s $WORK/verify.log ]]; then
    cat "$WORK/verify.log" >&2
    fail "systemd-analyze verify found problems in deploy/systemd"
fi
pass "deploy/systemd units pass systemd-analyze verify ($(systemd-analyze --version | head -1))"

SECONDS=0
bah bud --quiet --format docker --network host \
    --build-arg BASE_IMAGE="$BASE" -t "$IMAGE" . >/dev/null || fail "the image did not build"
echo "image: built $IMAGE in ${SECONDS} s, $(bah images --format '{{.Size}}' "$IMAGE")"

checks_started=$(date +%s)
# A new container of the image, in $NEW (and removed at exit).
new_container() {
    NEW=$(bah from --pull-never "$IMAGE")
    containers+=("$NEW")
}
# Runs the image's command ($2...) in container $1 as its user, in the background, with the
# settings in the array `env` (-e KEY=value ...); its output goes to $WORK/$1.log.
start() {
    local ctr=$1
    shift
    setsid buildah --root "$STORE/root" --runroot "$STORE/run" --storage-driver "$DRIVER" run \
        --network host "${env[@]}" "$ctr" -- "$@" >"$WORK/$ctr.log" 2>&1 &
    pids+=($!)
}
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}

new_container
ctr=$NEW
# The versions installed are deploy/constraints.txt's, every one of them listed there.
bah run "$ctr" -- pip freeze --exclude oos-notify >"$WORK/installed" 2>"$WORK/freeze.log"
if ! diff <(grep -v '^#' deploy/constraints.txt | sort -f) <(sort -f "$WORK/installed") >"$WORK/pins"; then
    cat "$WORK/pins" >&2
    fail "the image's packages (>) differ from deploy/constraints.txt (<): refresh it with $0 --refresh-constraints"
fi
pass "installs the $(wc -l <"$WORK/installed") versions of deploy/constraints.txt, nothing unpinned"
uid=$(bah run "$ctr" -- id -u)
[[ $uid != 0 ]] || fail "the image runs as root"
pass "runs as $(bah run "$ctr" -- id -un) (uid $uid)"

# 1. Without SMTP settings it refuses, since the capture mailbox would be on the network.
status=0
bah run --network host "$ctr" -- oos-notify serve >"$WORK/nosmtp.log" 2>&1 || status=$?
[[ $status == 2 ]] || { cat "$WORK/nosmtp.log" >&2; fail "without SMTP: exit $status, not 2"; }
grep -q 'is not a loopback address and no SMTP server is configured' "$WORK/nosmtp.log" &&
    grep -q 'OOS_NOTIFY_DEV_MAILBOX_ON_NETWORK=true' "$WORK/nosmtp.log" ||
    { cat "$WORK/nosmtp.log" >&2; fail "without SMTP: not the reason expected"; }
pass "without SMTP settings: exit 2: $(head -2 "$WORK/nosmtp.log" | tr -s ' \n' ' ')"

# The release failure of the README's quick start, dated now.
event() {
    local at ld inf
    at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    ld=$(date -u -d '+6 days' +%F)
    inf=$(date -u -d '+9 days' +%F)
    cat <<EOF
{"event_id": "QA-EVT-IMAGE-$1", "type": "release_failure", "incident_ref": "OOS-IMAGE-$1",
 "occurred_at": "$at", "center_id": "mercy-general-main",
 "product_code": "CARTX", "lot_number": "LOT-24-1187", "chain_of_identity": "COI-8K2M-4471",
 "severity": "major",
 "failed_attributes": [{"attribute": "viability", "specification": ">= 80 %", "result": "71 %"}],
 "key_dates": {"lymphodepletion_start": "$ld", "planned_infusion": "$inf"},
 "qa_contact": {"name": "A. Rivera", "email": "qa@manufacturer.example"}}
EOF
}
post_event() { # $1 base URL, $2 API key, $3 event number
    local code
    code=$(event "$3" | curl -sS -o "$WORK/posted.json" -w '%{http_code}' -X POST "$1/v1/events" \
        -H "Authorization: Bearer $2" -H 'Content-Type: application/json' -d @-)
    [[ $code == 202 ]] || { cat "$WORK/posted.json" >&2; fail "POST /v1/events: $code"; }
}
subject='Confirm receipt: OOS-IMAGE-%s, lot LOT-24-1187 failed release'

# Runs the demo in container $1 on a free port: ready, an event in, its notices in /dev/mailbox,
# and the image's own HEALTHCHECK command passing inside a container of the image.
demo() {
    local ctr=$1 what=$2 port url key deadline check
    port=$(free_port 18000)
    url=http://127.0.0.1:$port
    env=(-e OOS_NOTIFY_DEV_MAILBOX_ON_NETWORK=true -e OOS_NOTIFY_PORT="$port")
    key=$(bah run "${env[@]}" "$ctr" -- oos-notify apikey create --name "demo" 2>/dev/null)
    start "$ctr" oos-notify serve
    wait_ok "$url/readyz" 60 || { cat "$WORK/$ctr.log" >&2; fail "$what: not ready in 60 s"; }
    pass "$what: ready (GET /readyz 200) in ${SECONDS} s"
    post_event "$url" "$key" "$port"
    deadline=$((SECONDS + 30))
    until curl -fsS "$url/dev/mailbox" 2>/dev/null | grep -qF "OOS-IMAGE-$port"; do
        ((SECONDS < deadline)) || fail "$what: the notice never reached /dev/mailbox"
        sleep 0.5
    done
    pass "$what: /dev/mailbox served, holding the event's notice"
    check=$(bah inspect --type image --format '{{index .Docker.Config.Healthcheck.Test 1}}' "$IMAGE")
    new_container
    bah run --network host "${env[@]}" "$NEW" -- sh -c "$check" ||
        fail "$what: the HEALTHCHECK command failed: $check"
    pass "$what: the HEALTHCHECK command passes"
    stop_all
}

# 2. The demo: the capture server and mailbox, allowed by name.
SECONDS=0
new_container
demo "$NEW" "demo"

# 3. The demo with a read-only root filesystem (docker run --read-only --tmpfs /tmp -v ...:/data).
# buildah run cannot, so the container's root is mounted read-only and entered with chroot.
mapfile -t image_env < <(bah inspect --type image --format '{{range .Docker.Config.Env}}{{println .}}{{end}}' "$IMAGE" | grep .)
# Mounts container $1's root read-only, with /data and /tmp writable directories of their own,
# and sets RO_CMD to the command that runs a command ($@ after it) there as the image would: its
# environment (with VAR=value words $2...), working directory and user.
read_only() {
    local ctr=$1 root=$WORK/ro-$1 user mnt name
    shift
    mnt=$(bah mount "$ctr")
    name=$(bah inspect --type image --format '{{.Docker.Config.User}}' "$IMAGE")
    user=$(awk -F: -v name="$name" '$1 == name { print $3 ":" $4 }' "$mnt/etc/passwd")
    [[ -n $user ]] || fail "the image's user $name is not in its /etc/passwd"
    mkdir -p "$root" "$root-data" "$root-tmp"
    chown "$user" "$root-data"
    chmod 1777 "$root-tmp"
    mount --bind "$mnt" "$root"
    mount -o remount,bind,ro "$root"
    mount --bind "$root-data" "$root/data"
    mount --bind "$root-tmp" "$root/tmp"
    mount --rbind /dev "$root/dev"
    mount -t proc proc "$root/proc"
    RO_CMD=(chroot --userspec="$user" "$root" env -i "${image_env[@]}" HOME=/app "$@"
        sh -c 'cd /app && exec "$@"' sh)
}
SECONDS=0
new_container
ctr=$NEW
port=$(free_port 18000)
read_only "$ctr" OOS_NOTIFY_DEV_MAILBOX_ON_NETWORK=true OOS_NOTIFY_PORT="$port"
setsid "${RO_CMD[@]}" oos-notify serve >"$WORK/ro.log" 2>&1 &
pids+=($!)
wait_ok "http://127.0.0.1:$port/readyz" 60 || { cat "$WORK/ro.log" >&2; fail "read-only root: not ready"; }
key=$("${RO_CMD[@]}" oos-notify apikey create --name ro 2>/dev/null)
post_event "http://127.0.0.1:$port" "$key" "RO"
deadline=$((SECONDS + 30))
until curl -fsS "http://127.0.0.1:$port/dev/mailbox" 2>/dev/null | grep -qF "OOS-IMAGE-RO"; do
    ((SECONDS < deadline)) || { cat "$WORK/ro.log" >&2; fail "read-only root: no notice in /dev/mailbox"; }
    sleep 0.5
done
stop_all
grep -q 'Traceback\|Read-only file system' "$WORK/ro.log" && { cat "$WORK/ro.log" >&2; fail "read-only root: errors logged"; }
pass "demo, read-only root, /data and /tmp writable: ready, event in, notice in /dev/mailbox ($(ls "$WORK/ro-$ctr-data" | tr '\n' ' ')in /data) in ${SECONDS} s"

# 4. Real use: PostgreSQL, SMTP to a sink on the host, the api and the worker as processes of
# their own, each in its own container.
SECONDS=0
if [[ -z ${OOS_TEST_PG_URL:-} ]]; then
    eval "$(bash .ci/start-postgres.sh)"
    OWN_PG=1
fi
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
admin_url=${OOS_TEST_PG_URL/postgresql+psycopg:/postgresql:}
db=oos_image_$$
"$PG_BIN/psql" -q "$admin_url" -c "CREATE DATABASE $db"
db_url=${admin_url%/*}/$db
smtp_port=$(free_port 12525)
setsid "$PYTHON" -m aiosmtpd -n -l "127.0.0.1:$smtp_port" -c aiosmtpd.handlers.Mailbox "$WORK/sink" \
    >"$WORK/sink.log" 2>&1 &
pids+=($!)
api_port=$(free_port 18100)
worker_port=$(free_port $((api_port + 1)))
env=(
    -e OOS_NOTIFY_DATABASE_URL="$db_url"
    -e OOS_NOTIFY_SMTP_HOST=127.0.0.1 -e OOS_NOTIFY_SMTP_PORT="$smtp_port"
    -e OOS_NOTIFY_SMTP_SECURITY=none
    -e OOS_NOTIFY_SECRET_KEY=ci-image-secret-key-not-for-production
    -e OOS_NOTIFY_MAIL_FROM=oos-notify@manufacturer.example
    -e OOS_NOTIFY_PUBLIC_BASE_URL=https://oos.manufacturer.example
)
new_container
ctr=$NEW
bah run --network host "${env[@]}" "$ctr" -- oos-notify db upgrade >"$WORK/upgrade.log" 2>&1 ||
    { cat "$WORK/upgrade.log" >&2; fail "real use: db upgrade failed"; }
pass "real use: $(tail -1 "$WORK/upgrade.log")"
key=$(bah run --network host "${env[@]}" "$ctr" -- oos-notify apikey create --name qa-system 2>/dev/null)
env+=(-e OOS_NOTIFY_PORT="$api_port")
new_container
start "$NEW" oos-notify api
# The worker on a read-only root (as deploy/compose.yaml runs it).
env[-1]=OOS_NOTIFY_PORT=$worker_port
new_container
worker=$NEW
vars=()
for ((i = 1; i < ${#env[@]}; i += 2)); do vars+=("${env[i]}"); done
read_only "$worker" "${vars[@]}"
setsid "${RO_CMD[@]}" oos-notify worker >"$WORK/$worker.log" 2>&1 &
pids+=($!)
wait_ok "http://127.0.0.1:$api_port/readyz" 60 || fail "real use: the api was not ready in 60 s"
wait_ok "http://127.0.0.1:$worker_port/readyz" 60 || fail "real use: the worker was not ready in 60 s"
pass "real use: api and worker ready in ${SECONDS} s"
post_event "http://127.0.0.1:$api_port" "$key" "$$"
deadline=$((SECONDS + 30))
until grep -rlq 'ct-coord@mercy.example' "$WORK/sink/new" 2>/dev/null; do
    ((SECONDS < deadline)) || { cat "$WORK"/*.log >&2; fail "real use: no notice at the SMTP sink in 30 s"; }
    sleep 0.5
done
"$PYTHON" - "$WORK/sink" "$(printf "$subject" "$$")" <<'EOF' || fail "real use: the notice is not as expected"
import email
import email.policy
import mailbox
import sys


def parse(file):
    return email.message_from_binary_file(file, policy=email.policy.default)


box, subject = mailbox.Maildir(sys.argv[1], factory=parse, create=False), sys.argv[2]
notices = [m for m in box if m["X-RcptTo"] == "ct-coord@mercy.example"]
assert len(notices) == 1, f"{len(notices)} notices to the coordinator"
notice = notices[0]
assert notice["Subject"] == subject, notice["Subject"]
assert notice["From"].addresses[0].addr_spec == "oos-notify@manufacturer.example", notice["From"]
text = notice.get_body(("plain",)).get_content()
assert "https://oos.manufacturer.example/ack/" in text, "no acknowledgement link"
print(
    f"image: ok: real use: one event, {len(box)} notices at the sink; the coordinator's:"
    f" To {notice['To']!r}, Subject {notice['Subject']!r}, with its acknowledgement link"
)
EOF
stop_all
grep -q 'Traceback\|Read-only file system' "$WORK/$worker.log" &&
    { cat "$WORK/$worker.log" >&2; fail "real use: the worker on a read-only root logged errors"; }
pass "real use: the worker ran on a read-only root ($(ls "$WORK/ro-$worker-data" | wc -l) files written to /data)"
"$PG_BIN/psql" -q "$admin_url" -c "DROP DATABASE $db WITH (FORCE)"
echo "image: the image's runs took $(($(date +%s) - checks_started)) s"
