"""The systemd units in deploy/systemd agree with each other, the Procfile and the settings.

``make deploy-check`` (part of ``make check``) has systemd-analyze load and score them; these
tests check what it cannot: the processes they run, their shared hardening, the order of the
release step, and that the example environment file names only real settings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "deploy" / "systemd"
SERVICES = {
    "release": "kommo-sync-release.service",
    "web": "kommo-sync-web@.service",
    "worker": "kommo-sync-worker@.service",
}
BINARY = "/opt/kommo-sync/current/bin/kommo-sync"
HARDENING = (
    "NoNewPrivileges",
    "ProtectSystem",
    "PrivateTmp",
    "ProtectHome",
    "PrivateDevices",
    "CapabilityBoundingSet",
    "SystemCallFilter",
    "RestrictAddressFamilies",
)

Unit = dict[str, list[tuple[str, str]]]


def unit(name: str) -> Unit:
    """Section -> (key, value) lines, in order, keys repeated as written."""
    sections: Unit = {}
    current = None
    for raw in (UNITS / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{name}: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(u: Unit, section: str, key: str) -> list[str]:
    return [v for k, v in u.get(section, []) if k == key]


def one(u: Unit, section: str, key: str) -> str:
    found = values(u, section, key)
    assert len(found) == 1, (section, key, found)
    return found[0]


def procfile() -> dict[str, tuple[dict[str, str], str]]:
    """Each process's environment (``env NAME=value …``) and command, from the Procfile."""
    found = {}
    for line in (ROOT / "Procfile").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        name, command = line.split(": ", 1)
        words, env = command.split(), {}
        if words[0] == "env":
            words.pop(0)
            while "=" in words[0]:
                key, _, value = words.pop(0).partition("=")
                env[key] = value
        found[name] = (env, " ".join(words))
    return found


@pytest.mark.parametrize("process", sorted(SERVICES))
def test_each_unit_runs_its_procfile_command(process: str) -> None:
    u = unit(SERVICES[process])
    command = one(u, "Service", "ExecStart")
    env, procfile_command = procfile()[process]
    assert command.startswith(BINARY + " ")
    assert ("kommo-sync " + command.removeprefix(BINARY + " ")).startswith(procfile_command)
    environment = " ".join(values(u, "Service", "Environment")).split()
    for key, value in env.items():  # what the Procfile sets, the unit sets too
        assert f"{key}={value}" in environment, (process, key)
    assert one(u, "Service", "User") == "kommo-sync"
    assert one(u, "Service", "EnvironmentFile") == "/etc/kommo-sync/env"
    assert one(u, "Unit", "PartOf") == "kommo-sync.target"
    assert one(u, "Install", "WantedBy") == "kommo-sync.target"


def test_web_and_workers_start_after_a_successful_release() -> None:
    release = unit(SERVICES["release"])
    assert one(release, "Service", "Type") == "oneshot"
    assert one(release, "Service", "RemainAfterExit") == "yes"
    assert one(release, "Service", "ExecReload") == one(release, "Service", "ExecStart")
    for process in ("web", "worker"):
        u = unit(SERVICES[process])
        assert SERVICES["release"] in one(u, "Unit", "Requires").split(), process
        assert SERVICES["release"] in one(u, "Unit", "After").split(), process
        assert one(u, "Service", "Restart") == "on-failure", process
        assert "2" in one(u, "Service", "RestartPreventExitStatus").split(), process


def test_the_instance_is_the_port() -> None:
    web, worker = unit(SERVICES["web"]), unit(SERVICES["worker"])
    assert "PORT=%i" in " ".join(values(web, "Service", "Environment")).split()
    assert "WORKER_METRICS_PORT=%i" in " ".join(values(worker, "Service", "Environment")).split()
    assert one(web, "Install", "DefaultInstance").isdigit()
    assert one(worker, "Install", "DefaultInstance").isdigit()


def test_every_unit_has_the_same_hardening() -> None:
    def hardening(name: str) -> list[tuple[str, str]]:
        lines = unit(name)["Service"]
        start = next(i for i, (k, _) in enumerate(lines) if k == "NoNewPrivileges")
        return lines[start:]

    blocks = {name: hardening(name) for name in SERVICES.values()}
    first = blocks[SERVICES["release"]]
    assert {k for k, _ in first} >= set(HARDENING)
    assert ("ProtectSystem", "strict") in first
    assert ("NoNewPrivileges", "yes") in first
    assert ("CapabilityBoundingSet", "") in first
    for name, block in blocks.items():
        assert block == first, f"{name}: hardening differs from {SERVICES['release']}"


def test_the_target_and_the_user() -> None:
    target = unit("kommo-sync.target")
    assert SERVICES["release"] in one(target, "Unit", "Wants").split()
    assert one(target, "Install", "WantedBy") == "multi-user.target"
    sysusers = (UNITS / "kommo-sync.sysusers.conf").read_text(encoding="utf-8")
    entries = [line.split() for line in sysusers.splitlines() if line and line[0] != "#"]
    assert [e[:2] for e in entries] == [["u", "kommo-sync"]]


def test_the_example_environment_names_real_settings_and_no_secret() -> None:
    settings = (ROOT / "service" / "settings.py").read_text(encoding="utf-8")
    elsewhere = {"WEB_HOST": "the web unit's ExecStart", "FORWARDED_ALLOW_IPS": "uvicorn's own"}
    names = set()
    for line in (UNITS / "env.example").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#?\s?([A-Z][A-Z0-9_]+)=(.*)$", line)
        if not match:
            continue
        name, value = match.groups()
        names.add(name)
        assert name in elsewhere or f'"{name}"' in settings, f"{name} is no setting"
        if not line.startswith("#") and ("TOKEN" in name or "SECRET" in name):
            assert "CHANGE_ME" in value, f"{name} holds a value, not a placeholder"
        assert "#" not in value, f"{name}: systemd reads a trailing comment as part of the value"
    assert {"DATABASE_URL", "REDIS_URL", "KOMMO_WEBHOOK_SECRET", "WS_TOKENS"} <= names
    # the instance names set these; the file would override them for every instance
    assert not names & {"PORT", "WORKER_METRICS_PORT"}
