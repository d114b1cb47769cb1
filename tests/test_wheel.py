"""The wheel is what production installs: built from the checkout, installed (not editable) in a
fresh virtual environment, its ``kommo-sync migrate`` builds the whole schema in an empty database.

The fresh environment gets the project's already-installed dependencies through a ``.pth`` file
naming the directory they live in. Python adds that directory to ``sys.path`` but runs none of
the ``.pth`` files inside it, so the editable install of the project (an import hook started by
such a file) stays out: ``service`` and the migrations are imported from the wheel's copy.
Everything runs from a directory outside the checkout, so the checkout is not on ``sys.path``
either.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parent.parent
LEFT_OUT = frozenset({"kommo_sim", "devenv", "tests", "bench"})
"""Top-level modules of the checkout that production never installs."""
SHIPPED = frozenset({"service", "workers", "kommo_sync_sql"})
_CREATE_TABLE = re.compile(r"\bCREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.IGNORECASE)
_SCHEMA = """
    SELECT c.relkind::text AS kind, c.relname AS name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public'
    UNION ALL
    SELECT 'function', p.proname
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'public'"""
"""Every table, sequence, index, view and function of the public schema."""


def _run(*argv: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{argv[:3]} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would put other code on ``sys.path``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "DATABASE_URL", "REDIS_URL")
    }
    return {**env, "PYTHONNOUSERSITE": "1", **extra}


def _copy_checkout(dest: Path) -> Path:
    """The checkout as it is (tracked or not), minus dot folders (``.venv``, ``.git``, …) and
    build leftovers: the build writes its ``build/`` and ``*.egg-info`` in the copy."""
    src = dest / "src"
    junk = shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "build")
    shutil.copytree(ROOT, src, ignore=junk)
    return src


def _dependencies() -> Path:
    """Where the project's installed packages live (its venv's site-packages, usually)."""
    return Path(asyncpg.__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src, out = _copy_checkout(work), work / "dist"
    _run(
        sys.executable,
        *("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"),
        *("--disable-pip-version-check", "--quiet", "-w", out, src),
        cwd=work,
        env=_clean_env(),
    )
    (built,) = out.glob("kommo_sync-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh virtual environment with the wheel installed, the dependencies borrowed."""
    root = tmp_path_factory.mktemp("venv")
    assert not root.resolve().is_relative_to(ROOT), "the temporary folder is inside the checkout"
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root, env=_clean_env())
    python = venv / "bin" / "python"
    purelib = _run(
        python,
        *("-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"),
        cwd=root,
        env=_clean_env(),
    ).stdout.strip()
    deps = _dependencies()
    (Path(purelib) / "project_dependencies.pth").write_text(f"{deps}\n")
    # pip itself comes from the borrowed directory; --ignore-installed keeps it from looking at
    # (and trying to replace) the editable kommo-sync it can see there.
    _run(
        python,
        *("-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed"),
        *("--disable-pip-version-check", "--quiet", wheel),
        cwd=root,
        env=_clean_env(),
    )
    return venv


def test_the_wheel_ships_the_service_and_its_migrations_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    top = {n.split("/")[0].removesuffix(".py") for n in names if ".dist-info/" not in n}
    assert top == SHIPPED
    assert not top & LEFT_OUT
    migrations = sorted(p.name for p in (ROOT / "sql").glob("*.sql"))
    assert migrations, "the checkout has no sql/*.sql"
    shipped = sorted(n.removeprefix("kommo_sync_sql/") for n in names if n.endswith(".sql"))
    assert shipped == migrations
    assert "service/web/static/index.html" in names
    assert "kommo-sync = service.cli:main" in scripts


def test_the_installed_wheel_imports_its_own_copy(venv: Path) -> None:
    probe = """
import importlib.util, json, sys
import kommo_sync_sql, service, service.cli, workers
print(json.dumps({
    "modules": [m.__file__ for m in (service, service.cli, workers, kommo_sync_sql)],
    "path": sys.path,
    "finders": [repr(f) for f in sys.meta_path],
    "left_out": [n for n in ("kommo_sim", "devenv", "tests", "bench")
                 if importlib.util.find_spec(n) is not None],
}))
"""
    found = json.loads(
        _run(venv / "bin" / "python", "-c", probe, cwd=venv.parent, env=_clean_env()).stdout
    )
    purelib = next(Path(p) for p in found["path"] if p.startswith(str(venv)) and "site-" in p)
    for module in found["modules"]:
        assert Path(module).is_relative_to(purelib), module
    borrowed = _dependencies()  # inside the checkout when the project's venv is .venv
    entries = [(venv.parent / p).resolve() for p in found["path"]]  # "" is the probe's cwd
    assert [p for p in entries if p.is_relative_to(ROOT)] in ([], [borrowed])
    assert not [f for f in found["finders"] if "editable" in f.lower()]
    assert found["left_out"] == []


@pytest.fixture
async def empty_db(database_url: str) -> AsyncIterator[str]:
    """A database with nothing in it, dropped afterwards (as ``tests/conftest.py`` makes one)."""
    name = f"kommo_wheel_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield urlunsplit(urlsplit(database_url)._replace(path="/" + name))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _schema(url: str) -> set[tuple[str, str]]:
    conn = await asyncpg.connect(url)
    try:
        return {(r["kind"], r["name"]) for r in await conn.fetch(_SCHEMA)}
    finally:
        await conn.close()


async def test_the_installed_migrate_builds_the_whole_schema(
    venv: Path, empty_db: str, database_url: str
) -> None:
    assert await _schema(empty_db) == set()

    def migrate() -> str:
        command = (venv / "bin" / "kommo-sync", "migrate")
        return _run(*command, cwd=venv.parent, env=_clean_env(DATABASE_URL=empty_db)).stderr

    first = await asyncio.to_thread(migrate)
    migrations = sorted(p.name for p in (ROOT / "sql").glob("*.sql"))
    assert "migrations: " + ", ".join(migrations) in first

    built = await _schema(empty_db)
    tables = {name for kind, name in built if kind == "r"}
    declared = {
        m.lower()
        for p in (ROOT / "sql").glob("*.sql")
        for m in _CREATE_TABLE.findall(p.read_text())
    }
    assert declared and declared | {"schema_migrations"} <= tables
    assert built == await _schema(database_url)  # what the runner built for this test session

    second = await asyncio.to_thread(migrate)
    assert "migrations: up to date" in second
    assert await _schema(empty_db) == built
    conn = await asyncpg.connect(empty_db)
    try:
        names = [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")]
    finally:
        await conn.close()
    assert sorted(names) == migrations
