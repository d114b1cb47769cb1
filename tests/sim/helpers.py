"""Helpers of the simulator's tests: the standard config, a webhook receiver, shape comparison
for JSON answers and a PHP-bracket form parser for webhook bodies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx

from kommo_sim import RateLimitConfig, SimConfig

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kommo"

TOKEN = "test-token"
START = 1748268669  # 2025-05-26, the fixtures' era
HOOK_URL = "https://hooks.test/kommo/webhook"


class Receiver:
    """Captures webhook requests through an httpx.MockTransport; answers ``status``."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.status = 200
        self.error: Exception | None = None
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return httpx.Response(self.status)

    @property
    def bodies(self) -> list[str]:
        return [r.content.decode() for r in self.requests]


def make_config(**overrides: object) -> SimConfig:
    values: dict[str, object] = {
        "seed": 7,
        "leads": 40,
        "contacts": 30,
        "token": TOKEN,
        "start_time": START,
        "clock_speed": 0.0,
        "rate_limit": RateLimitConfig(rate=0),
        "webhook_layouts": "fixed",  # the fixtures' layout; test_sim_layouts varies it
    }
    values.update(overrides)
    return SimConfig(**values)  # type: ignore[arg-type]


def fixture_json(name: str) -> Any:
    return json.loads((FIXTURES / "api" / name).read_text())


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return type(value).__name__


def shape_mismatches(ours: Any, ref: Any, path: str = "$") -> list[str]:
    """Differences in keys and value types, recursively; [] when the shapes match.

    A null on either side matches any type (Kommo fields are nullable). Each element of one
    of our lists must match the shape of some element of the fixture's list, and a list
    that is non-empty in the fixture must be non-empty in ours, so it gets compared at all.
    """
    if ours is None or ref is None:
        return []
    if isinstance(ref, dict):
        if not isinstance(ours, dict):
            return [f"{path}: {_kind(ours)} instead of an object"]
        errors = []
        if set(ours) != set(ref):
            errors.append(
                f"{path}: missing {sorted(set(ref) - set(ours))}, "
                f"extra {sorted(set(ours) - set(ref))}"
            )
        for key in ref.keys() & ours.keys():
            errors += shape_mismatches(ours[key], ref[key], f"{path}.{key}")
        return errors
    if isinstance(ref, list):
        if not isinstance(ours, list):
            return [f"{path}: {_kind(ours)} instead of a list"]
        if not ref:
            return []
        if not ours:
            return [f"{path}: empty, the fixture's list is not"]
        errors = []
        for i, item in enumerate(ours):
            tries: list[list[str]] = [shape_mismatches(item, r, f"{path}[{i}]") for r in ref]
            if all(tries):
                errors += sorted(tries, key=len)[0]
        return errors
    if _kind(ours) != _kind(ref):
        return [f"{path}: {_kind(ours)} instead of {_kind(ref)}"]
    return []


def parse_php_form(body: str) -> dict[str, Any]:
    """Parse ``a[b][0][c]=v`` pairs into nested dicts (list indices stay string keys)."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True, strict_parsing=True):
        head, _, rest = key.partition("[")
        parts = [head] + ([p.rstrip("]") for p in ("[" + rest).split("[")[1:]] if rest else [])
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"{key}: {part} is both a value and a group")
            node = child
        if parts[-1] in node:
            raise ValueError(f"{key} appears twice")
        node[parts[-1]] = value
    return root


def form_paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
    """Leaf paths with list indices as ``*`` and ``linked_leads_id`` keys as ``<id>``."""
    paths: set[str] = set()
    for key, value in tree.items():
        if key.isdigit():
            key = "<id>" if prefix.endswith("linked_leads_id") else "*"
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            paths |= form_paths(value, path)
        else:
            paths.add(path)
    return paths


def fixture_form(name: str) -> str:
    return (FIXTURES / "webhooks" / name).read_text().strip()


def decoded_form(name: str) -> dict[str, Any]:
    """A fixture's ``.decoded.txt`` view (one ``key=value`` per line) as nested dicts."""
    lines = (FIXTURES / "webhooks" / name).read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return parse_php_form("&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs))
