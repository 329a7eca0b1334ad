"""The ``oos-notify`` command as an operator runs it: a real process, real files, real ports."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from oos_notify.delivery.capture import free_port
from tests import databases
from tests.conftest import CONFIG_DIR, ROOT, TEMPLATES_DIR, now, release_failure

COMMAND = str(Path(sys.executable).parent / "oos-notify")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working directory laid out as the README's quick start expects."""
    shutil.copytree(CONFIG_DIR, tmp_path / "config")
    shutil.copytree(TEMPLATES_DIR, tmp_path / "templates")
    return tmp_path


def run(
    workdir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OOS_NOTIFY_")}
    return subprocess.run(
        [COMMAND, *args],
        cwd=workdir,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_api_keys_are_shown_once_listed_without_secret_and_revocable(workdir: Path) -> None:
    created = run(workdir, "apikey", "create", "--name", "qa-system")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert re.fullmatch(r"oosk_[0-9a-f]{10}_[A-Za-z0-9_-]{40,}", key)

    listed = run(workdir, "apikey", "list")
    assert "qa-system" in listed.stdout and "active" in listed.stdout
    assert key not in listed.stdout and key.split("_", 2)[2] not in listed.stdout

    again = run(workdir, "apikey", "create", "--name", "qa-system")
    assert again.returncode == 1 and "exists already" in again.stderr

    revoked = run(workdir, "apikey", "revoke", "qa-system")
    assert revoked.returncode == 0
    assert (
        revoked.stdout == "revoked 'qa-system': every running process refuses it within 5 seconds\n"
    )
    assert "revoked" in run(workdir, "apikey", "list").stdout
    assert run(workdir, "apikey", "revoke", "nobody").returncode == 1

    # The database holds a hash, never the key
    assert key.encode() not in (workdir / "oos_notify.db").read_bytes()


@pytest.fixture
def served(workdir: Path) -> Iterator[tuple[str, str]]:
    """``oos-notify serve`` on its embedded defaults, as a newcomer starts it."""
    key = run(workdir, "apikey", "create", "--name", "newcomer").stdout.strip()
    port = free_port()
    env = {"OOS_NOTIFY_PORT": str(port), "OOS_NOTIFY_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    with serving(workdir, env) as (base, log):
        yield base, key
    output = log.read_text(encoding="utf-8")
    assert "Application shutdown complete" in output
    assert "/ack/" not in output.replace("/ack/…", ""), "an acknowledgement token reached the log"


def readme_example() -> str:
    """The README quick start's shell block that posts the example event."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.DOTALL)
    return next(block for block in blocks if "curl" in block and "/v1/events" in block)


def test_serve_on_embedded_defaults_shows_the_whole_flow_in_the_mailbox(
    workdir: Path, served: tuple[str, str]
) -> None:
    base, key = served
    # The README's own example, run as written: its key, its curl, its dates computed by `date`
    posted = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_example().replace("http://127.0.0.1:8000", base)],
        cwd=workdir,
        env={**os.environ, "PATH": f"{Path(COMMAND).parent}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert posted.returncode == 0, posted.stderr
    answer = json.loads(posted.stdout)
    assert answer["status"] == "notifying" and answer["duplicate"] is False, answer
    # On any day, only the first step is due at once: lymphodepletion is days away
    first = [s for s in answer["scheduled"] if s["template"] == "release_failure_initial"]
    later = [s for s in answer["scheduled"] if s not in first]
    assert {s["role"] for s in first} == {"coordinator", "physician", "cell_lab"}
    assert later and min(s["due_at"] for s in later) > max(s["due_at"] for s in first)

    # The newcomer finds the initial notice in the capture mailbox, link included
    for _ in range(100):
        listing = httpx.get(f"{base}/dev/mailbox").text
        numbers = re.findall(r'href="/dev/mailbox/(\d+)"', listing)
        if len(numbers) >= 3:
            break
        time.sleep(0.05)
    assert len(numbers) == 3 and "LOT-24-1187" in listing
    pages = [httpx.get(f"{base}/dev/mailbox/{n}").text for n in numbers]
    coordinator = next(p for p in pages if "ct-coord@mercy.example" in p)
    [link] = re.findall(rf'<a href="({re.escape(base)}/ack/[^"]+)"', coordinator)

    # Following it and confirming acknowledges the incident
    assert "please confirm" in httpx.get(link).text
    assert "Thank you" in httpx.post(link, data={"response": "received"}).text
    incident = httpx.get(
        f"{base}/v1/incidents/{answer['incident_id']}",
        headers={"Authorization": f"Bearer {key}"},
    ).json()
    assert incident["status"] == "acknowledged"


def test_serve_without_a_secret_key_refuses_a_real_smtp_server(workdir: Path) -> None:
    result = run(
        workdir,
        "serve",
        env={
            "OOS_NOTIFY_SMTP_HOST": "127.0.0.1",
            "OOS_NOTIFY_PORT": str(free_port()),
            "OOS_NOTIFY_DEV_ALLOW_INSECURE_MAIL": "true",
        },
    )
    assert result.returncode == 2
    assert "OOS_NOTIFY_SECRET_KEY" in result.stderr


# --- the Docker image --------------------------------------------------------------------------
# No container engine here: the image's environment, read from the Dockerfile, is given to
# `oos-notify serve` in the image's layout (config/ and templates/ in the working directory).

DOCKERFILE = ROOT / "Dockerfile"


def dockerfile_env() -> dict[str, str]:
    """The OOS_NOTIFY_* variables that the Dockerfile's ENV instructions set."""
    env: dict[str, str] = {}
    for line in DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ").splitlines():
        instruction, _, arguments = line.strip().partition(" ")
        if instruction == "ENV":
            env |= dict(pair.split("=", 1) for pair in shlex.split(arguments))
    return {name: value for name, value in env.items() if name.startswith("OOS_NOTIFY_")}


def dockerfile_demo() -> list[str]:
    """The demo's ``docker run`` command, as the Dockerfile's comments write it."""
    [command] = [
        line.lstrip("#").strip()
        for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if line.startswith("#") and "docker run" in line and "DEV_MAILBOX" in line
    ]
    return shlex.split(command)


def image_env(database_url: str, **extra: str) -> dict[str, str]:
    """The image's environment on this machine: its own port and database (the suite's kind),
    nothing else moved."""
    env = dockerfile_env()
    assert env["OOS_NOTIFY_DATABASE_URL"].startswith("sqlite:////data/")
    return env | {
        "OOS_NOTIFY_PORT": str(free_port()),
        "OOS_NOTIFY_DATABASE_URL": database_url,
        **extra,
    }


def test_the_docker_image_without_smtp_refuses_to_start_and_says_how_to_run_it(
    workdir: Path,
) -> None:
    # Given the image's environment: listening on every interface, no SMTP server configured
    database = databases.empty_url_for(workdir)
    env = image_env(database)

    # When it starts as `docker run oos-notify` starts it
    result = run(workdir, "serve", env=env)

    # Then it refuses before it listens or creates anything, and says what to do instead
    assert result.returncode == 2, result.stderr
    assert "OOS_NOTIFY_HOST: 0.0.0.0 is not a loopback address" in result.stderr
    assert "/dev/mailbox" in result.stderr
    for real_use in (
        "OOS_NOTIFY_SMTP_HOST",
        "OOS_NOTIFY_MAIL_FROM",
        "OOS_NOTIFY_SECRET_KEY",
        "OOS_NOTIFY_PUBLIC_BASE_URL",
    ):
        assert real_use in result.stderr
    assert shlex.join(dockerfile_demo()) in result.stderr
    assert databases.untouched(database)


def test_the_docker_images_demo_command_serves_the_mailbox_published_on_loopback(
    workdir: Path,
) -> None:
    # Given the demo command the Dockerfile documents
    demo = dockerfile_demo()
    assert demo[:2] == ["docker", "run"]
    published = demo[demo.index("-p") + 1]
    assert published.startswith("127.0.0.1:"), "the demo must publish on the host's loopback only"
    opted_in = dict(demo[i + 1].split("=", 1) for i, flag in enumerate(demo) if flag == "-e")
    assert opted_in == {"OOS_NOTIFY_DEV_MAILBOX_ON_NETWORK": "true"}

    # When the image runs with it, and QA posts an event
    env = image_env(databases.url_for(workdir), **opted_in)
    key = run(workdir, "apikey", "create", "--name", "demo", env=env).stdout.strip()
    with serving(workdir, env) as (base, output):
        posted = httpx.post(
            f"{base}/v1/events",
            json=release_failure(at=now()),
            headers={"Authorization": f"Bearer {key}"},
        )
        assert posted.status_code == 202, posted.text

        # Then the demo's user finds the emails in the mailbox
        for _ in range(100):
            listing = httpx.get(f"{base}/dev/mailbox")
            if listing.text.count('href="/dev/mailbox/') >= 3:
                break
            time.sleep(0.05)
        assert listing.status_code == 200 and "LOT-24-1187" in listing.text
    # And the log warns that the mailbox is open to the network
    assert "OOS_NOTIFY_DEV_MAILBOX_ON_NETWORK is set" in output.read_text(encoding="utf-8")


@contextmanager
def serving(workdir: Path, env: Mapping[str, str]) -> Iterator[tuple[str, Path]]:
    """``oos-notify serve`` with ``env`` for the block: its base URL on loopback and its log."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OOS_NOTIFY_")}
    base = f"http://127.0.0.1:{env['OOS_NOTIFY_PORT']}"
    log = workdir / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [COMMAND, "serve"], cwd=workdir, env={**clean, **env}, stdout=output, stderr=output
        )
    try:
        for _ in range(600):
            if process.poll() is not None:
                pytest.fail(f"serve exited: {log.read_text(encoding='utf-8')}")
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            pytest.fail("oos-notify serve did not become ready")
        yield base, log
    finally:
        process.terminate()
        returncode = process.wait(timeout=30)
    # uvicorn re-raises SIGTERM after a clean stop
    assert returncode in (0, -signal.SIGTERM), log.read_text(encoding="utf-8")


# --- preview ---------------------------------------------------------------------------------


def test_preview_renders_a_message_with_the_centers_own_wording(workdir: Path) -> None:
    # Given Bonn's own subject line for the first notice
    override = workdir / "templates" / "centers" / "rhein-uk-bonn" / "release_failure_initial"
    override.mkdir(parents=True)
    (override / "subject.txt").write_text(
        "[OOS] Charge {{ incident.lot_number }} außerhalb der Spezifikation", encoding="utf-8"
    )

    result = run(
        workdir,
        "preview",
        "--center",
        "rhein-uk-bonn",
        "--template",
        "release_failure_initial",
        "--html",
        "bonn.html",
    )

    assert result.returncode == 0, result.stderr
    subject, _, text = result.stdout.partition("\n\n")
    assert subject == "Subject: [OOS] Charge LOT-SAMPLE-01 außerhalb der Spezifikation"
    assert "Koordination Zelltherapie," in text  # the site's first contact, from config
    assert "/ack/" in text and "CET" in text  # times in the center's zone
    html = (workdir / "bonn.html").read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and "LOT-SAMPLE-01" in html


def test_preview_with_an_event_file_shows_that_events_facts(workdir: Path) -> None:
    at = now()
    event = release_failure(
        at=at,
        center_id="mercy-west",
        lot_number="LOT-77-0001",
        failed_attributes=[
            {"attribute": "<b>potency</b>", "specification": ">= 40 %", "result": "22 %"}
        ],
    )
    (workdir / "event.json").write_text(json.dumps(event), encoding="utf-8")

    result = run(
        workdir,
        "preview",
        "--center",
        "mercy-west",
        "--template",
        "oos_release_decision",
        "--event",
        "event.json",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "Subject: Decision needed: OOS-2026-0142, lot LOT-77-0001 offered for OOS release\n"
    )
    assert "<b>potency</b>: result 22 %" in result.stdout  # the text part is plain text
    assert "RECORD YOUR DECISION" in result.stdout
    html = (workdir / "preview-mercy-west-oos_release_decision.html").read_text(encoding="utf-8")
    assert "&lt;b&gt;potency&lt;/b&gt;" in html and "<b>potency</b>" not in html
    # Its times are Mercy West's (America/Denver), named as on that day: MST in winter, MDT in
    # summer (a fixed "MST" would hold only for the sample's own November dates). The preview
    # opens the incident when the command runs: the minute may have turned since ``at``.
    [reported] = re.findall(r"^Reported: +(.+)$", result.stdout, re.MULTILINE)
    minutes = range(int((now() - at).total_seconds() // 60) + 2)
    assert reported in {
        (at + timedelta(minutes=m))
        .astimezone(ZoneInfo("America/Denver"))
        .strftime("%a %d %b %Y, %H:%M %Z")
        for m in minutes
    }
    assert reported in html


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--center", "nowhere", "--template", "escalation_final"],
            "--center: no site 'nowhere'; known: mercy-general-main",
            id="unknown-center",
        ),
        pytest.param(
            ["--center", "mercy-west", "--template", "no_such_message"],
            "--template: no template 'no_such_message' for mercy-west",
            id="unknown-template",
        ),
        pytest.param(
            ["--center", "mercy-west", "--template", "escalation_final", "--event", "missing.json"],
            "--event: cannot read missing.json",
            id="missing-event-file",
        ),
        pytest.param(
            ["--center", "mercy-west", "--template", "escalation_final", "--event", "bad.json"],
            "--event: bad.json: lot_number: String should have at most 100 characters",
            id="invalid-event",
        ),
        pytest.param(
            ["--center", "mercy-west", "--template", "escalation_final", "--event", "other.json"],
            "--event: the event is for 'mercy-general-main', not 'mercy-west'",
            id="event-for-another-center",
        ),
    ],
)
def test_preview_refuses_what_it_cannot_render(
    workdir: Path, args: list[str], message: str
) -> None:
    (workdir / "bad.json").write_text(json.dumps(release_failure(at=now(), lot_number="L" * 101)))
    (workdir / "other.json").write_text(json.dumps(release_failure(at=now())))

    result = run(workdir, "preview", *args)

    assert result.returncode == 2
    assert message in result.stderr
    assert not list(workdir.glob("preview-*.html"))
