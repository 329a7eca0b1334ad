"""Hostile config files are refused cleanly: a message naming the file, quickly, in bounded memory.

An agreement file can come from a generator gone wrong, a copy-paste from the internet or someone
who wants the service down. Whatever it holds, `check-config` and `serve` must say which file is
wrong and exit 2, not crash, hang or eat the machine's memory.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from oos_notify.agreements.config import ConfigError, ConfigProblem, load_agreements
from tests.conftest import command_env

ROOT = Path(__file__).resolve().parents[1]
OOS_NOTIFY = str(Path(sys.executable).parent / "oos-notify")
PLAN = "plans/standard.yaml"
SYSTEM = "health_systems/mercy-health.yaml"
SECONDS = 10.0
"""Generous for a 2-core machine shared with other work; a quadratic or unbounded read takes
minutes, the refusals here take well under a second each."""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(ROOT / "config", target)
    return target


def billion_laughs(path: Path) -> None:
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path.write_text("id: standard\n" + "\n".join(levels) + "\n", encoding="utf-8")


def merge_key_bomb(path: Path) -> None:
    lines = ["base0: &b0 {x: lol}"]
    lines += [f"base{i}: &b{i} {{<<: [*b{i - 1}, *b{i - 1}], y{i}: 1}}" for i in range(1, 30)]
    path.write_text("id: standard\n" + "\n".join(lines) + "\n", encoding="utf-8")


def deep_flow_nesting(path: Path) -> None:
    path.write_text("id: standard\nsteps: " + "[" * 100_000 + "]" * 100_000 + "\n")


def deep_mapping_nesting(path: Path) -> None:
    path.write_text("id: standard\nsteps: " + "{a: " * 50_000 + "1" + "}" * 50_000 + "\n")


def deep_block_nesting(path: Path) -> None:
    path.write_text("id: standard\nsteps:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 400)))


def too_many_values(path: Path) -> None:
    path.write_text("id: standard\nsteps: [" + "1," * 60_000 + "]\n")


def many_keys(path: Path) -> None:
    path.write_text("id: standard\n" + "".join(f"k{i}: 1\n" for i in range(20_000)))


def huge_file(path: Path) -> None:
    path.write_text("id: standard\n# " + "x" * (2 * 1024 * 1024) + "\n")


def huge_number(path: Path) -> None:
    path.write_text("id: standard\nsteps: " + "9" * 100_000 + "\n")


def impossible_date(path: Path) -> None:
    path.write_text(path.read_text() + "closed: 2026-02-30\n")


def unhashable_key(path: Path) -> None:
    path.write_text(path.read_text() + "? [a, b]\n: 1\n")


def python_object_tag(path: Path) -> None:
    path.write_text("id: !!python/object/apply:os.system ['touch pwned']\n")


def latin_1(path: Path) -> None:
    path.write_bytes("id: standard\nname: Klinikum Köln\n".encode("latin-1"))


def utf_16(path: Path) -> None:
    path.write_bytes(path.read_text().encode("utf-16"))


def nul_byte(path: Path) -> None:
    path.write_bytes(b"id: stan\x00dard\n")


def link_to_dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def named_pipe(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def a_list(path: Path) -> None:
    path.write_text("- id: standard\n- steps: []\n")


def empty(path: Path) -> None:
    path.write_text("")


HOSTILE: list[tuple[str, Callable[[Path], None], str]] = [
    ("billion-laughs", billion_laughs, "aliases (*name) are not allowed"),
    ("merge-key-bomb", merge_key_bomb, "aliases (*name) are not allowed"),
    ("deep-flow-nesting", deep_flow_nesting, "nested deeper than 32 levels"),
    ("deep-mapping-nesting", deep_mapping_nesting, "nested deeper than 32 levels"),
    ("deep-block-nesting", deep_block_nesting, "nested deeper than 32 levels"),
    ("too-many-values", too_many_values, "more than 50000 values in one file"),
    ("huge-file", huge_file, "file is larger than 1 MiB"),
    ("huge-number", huge_number, "cannot read the value '9999"),
    ("impossible-date", impossible_date, "cannot read the value '2026-02-30'"),
    ("unhashable-key", unhashable_key, "found unhashable key"),
    ("python-object-tag", python_object_tag, "could not determine a constructor"),
    ("latin-1", latin_1, "file is not UTF-8 text"),
    ("utf-16", utf_16, "file is not UTF-8 text"),
    ("nul-byte", nul_byte, "special characters are not allowed"),
    ("link-to-dev-zero", link_to_dev_zero, "not a regular file"),
    ("named-pipe", named_pipe, "not a regular file"),
    ("a-list", a_list, "expected a mapping of fields at the top level"),
    ("empty", empty, "expected a mapping of fields at the top level"),
]


def refusals(config: Path, file: str) -> list[ConfigProblem]:
    """The problems reported for ``file``, once loading has refused the folder in time."""
    started = time.monotonic()
    with pytest.raises(ConfigError) as raised:
        load_agreements(config)
    assert time.monotonic() - started < SECONDS
    return [p for p in raised.value.problems if p.file == f"config/{file}"]


@pytest.mark.parametrize(("make", "says"), [pytest.param(m, s, id=i) for i, m, s in HOSTILE])
def test_a_hostile_plan_file_is_refused_naming_the_file(
    config: Path, make: Callable[[Path], None], says: str
) -> None:
    make(config / PLAN)

    [problem] = refusals(config, PLAN)

    assert says in problem.message, problem
    assert not (config.parent / "pwned").exists()


def test_many_distinct_keys_are_checked_for_repeats_in_linear_time(config: Path) -> None:
    # 20,000 keys took more than 20 s when each key was compared with every other
    many_keys(config / PLAN)

    problems = refusals(config, PLAN)

    assert len(problems) > 20_000
    assert any(p.field == "k19999" and "Extra inputs" in p.message for p in problems)


@pytest.mark.parametrize(
    ("old", "new", "field", "says"),
    [
        pytest.param("timezone: America/Chicago", "timezone: 42", "timezone", "valid string"),
        pytest.param(
            "plans: {release_failure: standard, late_result: urgent}",
            "plans: [standard]",
            "plans",
            "valid dictionary",
        ),
        pytest.param(
            "  - {id: mh-pharmacy-dir, name: System Pharmacy Director, "
            "email: rx-director@mercy.example, roles: [pharmacy_director]}",
            "  - 42",
            "contacts[0]",
            "valid dictionary",
        ),
        pytest.param(
            "ack_link_valid_for: 14d",
            "ack_link_valid_for: [14d]",
            "defaults.ack_link_valid_for",
            "",
        ),
        pytest.param(
            'business_hours: {days: [mon, tue, wed, thu, fri], start: "08:00", end: "17:00"}',
            "business_hours: {start: yes}",
            "business_hours.start",
            "",
        ),
    ],
)
def test_a_wrong_type_is_named_by_field(
    config: Path, old: str, new: str, field: str, says: str
) -> None:
    path = config / SYSTEM
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1
    path.write_text(text.replace(old, new), encoding="utf-8")

    problems = refusals(config, SYSTEM)

    assert any(p.field == field and says in p.message for p in problems), problems


# --- the commands, as an operator runs them ---------------------------------------------------


def run_measured(workspace: Path, command: str) -> tuple[int, str, int]:
    """Run ``oos-notify <command>``; its exit code, stderr and peak memory in MiB.

    The peak is the command's own high-water mark (``VmHWM``, which starts afresh at exec),
    read until it exits: a forked child's ``ru_maxrss`` starts at the test process's size,
    which grows as the suite runs."""
    env = command_env(workspace)
    process = subprocess.Popen(
        [OOS_NOTIFY, command],
        cwd=workspace,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # A runaway read fails at 2 GiB instead of taking the machine's memory with it
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)),
    )
    assert process.stderr is not None
    peak_kib = 0
    watching = True

    def watch() -> None:
        nonlocal peak_kib
        status = Path(f"/proc/{process.pid}/status")
        while watching:
            try:
                lines = status.read_text().splitlines()
            except OSError:
                return
            for line in lines:
                if line.startswith("VmHWM:"):
                    peak_kib = max(peak_kib, int(line.split()[1]))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    deadline = threading.Timer(60, process.kill)
    deadline.start()
    try:
        stderr = process.stderr.read()
        process.wait()
    finally:
        watching = False
        deadline.cancel()
        watcher.join()
        process.stderr.close()
    return process.returncode, stderr, peak_kib // 1024


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_the_commands_refuse_hostile_files_quickly_in_bounded_memory(
    tmp_path: Path, command: str
) -> None:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    config = tmp_path / "config"
    billion_laughs(config / "plans/standard.yaml")
    deep_flow_nesting(config / "plans/urgent.yaml")
    link_to_dev_zero(config / "health_systems/rhein-klinikum.yaml")
    latin_1(config / "manufacturer.yaml")

    started = time.monotonic()
    code, stderr, peak_mib = run_measured(tmp_path, command)
    seconds = time.monotonic() - started

    assert code == 2, stderr
    assert "Traceback" not in stderr
    for file, says in [
        ("config/plans/standard.yaml", "aliases (*name) are not allowed"),
        ("config/plans/urgent.yaml", "nested deeper than 32 levels"),
        ("config/health_systems/rhein-klinikum.yaml", "not a regular file"),
        ("config/manufacturer.yaml", "file is not UTF-8 text"),
    ]:
        assert any(line.startswith(f"  {file}: ") and says in line for line in stderr.splitlines())
    assert seconds < 30
    assert peak_mib < 300, f"{command} peaked at {peak_mib} MiB"


@pytest.mark.parametrize(
    "escape",
    ["\\r\\n", "\\n", "\\r", "\\x85", "\\u2028", "\\u2029", "\\0", "\\t", "\\e", "\\x7f", "\\x9b"],
)
@pytest.mark.parametrize(
    ("old", "field"),
    [
        pytest.param("name: System Pharmacy Director", "contacts[0].name", id="contact"),
        pytest.param("name: Mercy West Cancer Center", "sites[1].name", id="site"),
        pytest.param("name: Mercy Health", "name", id="health-system"),
    ],
)
def test_a_control_character_in_a_name_is_refused_naming_the_field(
    config: Path, escape: str, old: str, field: str
) -> None:
    # A name goes into the To header (contacts) or the subject (sites): one line, no controls
    path = config / SYSTEM
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1
    path.write_text(text.replace(old, f'{old[:6]}"{old[6:]}{escape}Bcc: x@evil.example"'))

    [problem] = refusals(config, SYSTEM)

    assert problem.field == field
    assert problem.message.startswith("must be one line of text without control characters")
