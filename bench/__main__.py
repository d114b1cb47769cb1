"""``python -m bench`` (``make bench``): every benchmark in one go, one table.

Each benchmark runs as its own process under a time limit (they start the service's processes
themselves and clean up after them); the runner collects their rows, prints one markdown table
and writes ``bench/results/latest.md``. A full run of every benchmark also writes
``docs/benchmarks.md``.

    python -m bench [--quick] [--only NAME[,NAME...]]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from bench.common import PYTHON, RESULTS, ROOT, Report, Row, machine, table

BUDGET_S = 14 * 60  # the whole run stays under 15 minutes
DOCS = ROOT / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Bench:
    name: str
    what: str
    timeout_s: float  # for a full run; a quick run gets half
    args: list[str] = field(default_factory=list)
    quick_args: list[str] = field(default_factory=list)


BENCHES = [
    Bench("ingest", "webhook endpoint under wrk vs parse_qsl + LPUSH", 150),
    Bench("coalescing", "Kommo calls for a bulk change of 1,000 leads", 120),
    Bench("freshness", "change → lead_update at 50 changes/s, webhooks vs polling", 180),
    Bench("idle", "reconcile's Kommo calls when nothing changes", 120),
    Bench("backfill", "100k leads + 50k contacts at 7 requests/s; priority probe", 420),
    Bench(
        "fanout",
        "Redis → /ws → 1,000 clients (bench/fanout.py)",
        150,
        quick_args=["--clients", "200", "--duration", "5"],
    ),
]


def run_one(bench: Bench, quick: bool, timeout: float) -> tuple[Report, str]:
    """Run one benchmark in its own process; its output streams through and is kept."""
    out = RESULTS / f"{bench.name}.json"
    out.unlink(missing_ok=True)
    if bench.name == "fanout":
        command = [
            PYTHON,
            str(ROOT / "bench" / "fanout.py"),
            *(bench.quick_args if quick else bench.args),
        ]
    else:
        command = [
            PYTHON,
            "-m",
            f"bench.{bench.name}",
            "--json",
            str(out),
            *(["--quick"] if quick else []),
        ]
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    timer = threading.Timer(timeout, proc.send_signal, (signal.SIGTERM,))  # it cleans up
    timer.start()
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    timed_out = not timer.is_alive() and proc.poll() is None
    timer.cancel()
    try:
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    output = "".join(lines)
    if bench.name == "fanout":
        return fanout_report(output, code), output
    if code == 0 and out.exists():
        data = json.loads(out.read_text())
        return Report([Row.from_json(r) for r in data["rows"]], data["notes"]), output
    reason = "timed out" if timed_out or code == -signal.SIGTERM else f"exit code {code}"
    tail = " ".join(output.strip().splitlines()[-3:])[-300:]
    return Report(
        [Row(bench.name, bench.what, float("nan"), "", problem=reason)],
        [f"{bench.name} failed ({reason}): {tail}"],
    ), output


def fanout_report(output: str, code: int) -> Report:
    """Rows from bench/fanout.py's first table (its format, read defensively)."""
    name = "fan-out"
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 8 and cells[0] not in ("scenario", "---"):
            found[cells[0]] = cells
    one = next((c for s, c in found.items() if s.startswith("gateway, 1 client")), None)
    many = next((c for s, c in found.items() if s.startswith("gateway,") and "clients" in s), None)
    heading = re.search(r"### Fan-out: (.*)", output)
    if code != 0 or one is None or many is None:
        tail = " ".join(output.strip().splitlines()[-3:])[-300:]
        return Report(
            [Row(name, "fan-out", float("nan"), "", problem=f"exit code {code}")],
            [f"fanout failed or printed no table: {tail}"],
        )
    clients = many[1]
    return Report(
        [
            Row(
                name,
                f"p99 latency, {clients} clients + 1 stalled",
                float(many[5]),
                "ms",
                float(one[5]),
                "1 client, same rate",
            ),
            Row(
                name,
                f"p50 latency, {clients} clients + 1 stalled",
                float(many[4]),
                "ms",
                float(one[4]),
                "1 client, same rate",
            ),
            Row(name, "messages lost by the healthy clients", float(many[3]), "", None),
        ],
        [
            f"Fan-out ({heading.group(1) if heading else 'bench/fanout.py'}): "
            + "; ".join(
                f"{s}: p50 {c[4]} ms, p99 {c[5]} ms, max {c[6]} ms, lost {c[3]}, server CPU {c[7]}"
                for s, c in found.items()
            )
        ],
    )


def document(reports: dict[str, Report], quick: bool, elapsed: float) -> str:
    rows = [r for report in reports.values() for r in report.rows]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmarks",
        "",
        f"`make bench` ({'quick' if quick else 'full'} run) on {stamp}, {machine()}, "
        f"in {elapsed / 60:.1f} minutes. Every baseline was measured in the same run on the "
        "same machine (a shared 2-core box: absolute numbers are noisy, ratios less so). "
        "The scripts are in `bench/`; each says in its docstring what it runs and measures.",
        "",
        table(rows),
        "",
        "## Details",
    ]
    for name, report in reports.items():
        parts += ["", f"### {name}", ""]
        parts += [f"- {note}" for note in report.notes]
    parts += [
        "",
        "## Reproduce",
        "",
        "```",
        "make bench                      # everything, < 15 minutes",
        "python -m devenv -- python -m bench --only backfill,idle",
        "python -m devenv -- python -m bench --quick   # smaller sizes, a smoke run",
        "python -m devenv -- python -m bench.freshness  # one benchmark, its own table",
        "```",
        "",
        "Needs `wrk` for the ingest benchmark (`apt-get install -y wrk`). Each benchmark "
        "creates and drops its own database and uses its own Redis key prefix.",
        "",
    ]
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--only", help="comma-separated: " + ", ".join(b.name for b in BENCHES))
    args = parser.parse_args()
    chosen = BENCHES
    if args.only:
        names = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = names - {b.name for b in BENCHES}
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
        chosen = [b for b in BENCHES if b.name in names]
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    reports: dict[str, Report] = {}
    for bench in chosen:
        left = BUDGET_S - (time.monotonic() - started)
        limit = min(bench.timeout_s / (2 if args.quick else 1), left)
        if limit < 30:
            reports[bench.name] = Report(
                [Row(bench.name, bench.what, float("nan"), "", problem="skipped: out of time")]
            )
            continue
        print(f"\n## {bench.name}: {bench.what}\n", flush=True)
        reports[bench.name], output = run_one(bench, args.quick, limit)
        (RESULTS / f"{bench.name}.txt").write_text(output)
    elapsed = time.monotonic() - started
    text = document(reports, args.quick, elapsed)
    (RESULTS / "latest.md").write_text(text)
    if not args.quick and not args.only:
        DOCS.write_text(text)
    print("\n" + table([r for report in reports.values() for r in report.rows]))
    print(
        f"\nwritten: {RESULTS / 'latest.md'}" + ("" if args.quick or args.only else f" and {DOCS}"),
        flush=True,
    )
    missed = [
        f"{r.bench}: {r.name}" for rep in reports.values() for r in rep.rows if r.met is False
    ]
    if missed:
        print(f"goals missed: {len(missed)}", flush=True)
    # A NaN value with a problem: the benchmark itself failed, timed out or was skipped.
    broken = [r for rep in reports.values() for r in rep.rows if r.problem and math.isnan(r.value)]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
