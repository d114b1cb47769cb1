"""``python -m kommo_sim``: run the simulator as a process (demo mode, manual testing)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from dataclasses import replace

from kommo_sim.config import SimConfig, fill_url
from kommo_sim.fleet import SimFleet
from kommo_sim.server import run_forever
from kommo_sim.simulator import Simulator

logger = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kommo_sim", description="Run the Kommo API simulator."
    )
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token", required=True, help="the long-lived bearer token it accepts")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--leads", type=int, default=1000)
    p.add_argument("--contacts", type=int, default=600)
    p.add_argument("--companies", type=int, default=200)
    p.add_argument("--tags", type=int, default=16)
    p.add_argument("--pipelines", type=int, default=2)
    p.add_argument("--users", type=int, default=5)
    p.add_argument("--account-id", type=int, default=31000001)
    p.add_argument("--subdomain", default="examplecorp")
    p.add_argument(
        "--accounts",
        type=int,
        default=None,
        metavar="N",
        help="serve N accounts, each under /<subdomain> (ids, subdomains and tokens derived "
        "from --account-id, --subdomain and --token); one line per account is printed",
    )
    p.add_argument(
        "--webhook-layouts",
        choices=("vary", "fixed"),
        default="vary",
        help="vary webhook body layouts per delivery (default) or always use the fixtures' one",
    )
    p.add_argument(
        "--webhook",
        action="append",
        default=[],
        metavar="URL",
        help="subscribe this destination to every lead, contact and company event (and "
        "unsorted bodies); {subdomain} and {account_id} are filled in per account",
    )
    p.add_argument(
        "--changes-per-second",
        type=float,
        default=0.0,
        help="apply random changes at this rate (demo mode)",
    )
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    started = time.perf_counter()
    config = SimConfig(
        seed=args.seed,
        leads=args.leads,
        contacts=args.contacts,
        companies=args.companies,
        tags=args.tags,
        pipelines=args.pipelines,
        users=args.users,
        token=args.token,
        account_id=args.account_id,
        subdomain=args.subdomain,
        webhooks=args.webhook,
        webhook_layouts=args.webhook_layouts,
    )
    if args.accounts is not None and args.accounts < 1:
        raise SystemExit("--accounts must be at least 1")
    sim: Simulator | SimFleet
    if args.accounts is None:
        sim = Simulator(replace(config, webhooks=[_fill(u, config) for u in config.webhooks]))
    else:
        sim = SimFleet.generate(args.accounts, config)
    logger.info(
        "generated %d account(s) of %d leads, %d contacts and %d companies in %.2fs",
        args.accounts or 1,
        args.leads,
        args.contacts,
        args.companies,
        time.perf_counter() - started,
    )
    try:
        asyncio.run(run_forever(sim, args.host, args.port, args.changes_per_second))
    except KeyboardInterrupt:
        logger.info("simulator stopped")
    return 0


def _fill(url: str, config: SimConfig) -> str:
    return fill_url(url, config.subdomain, config.account_id)
