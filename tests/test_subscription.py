import math

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from kommo_sim import RateLimitConfig, SimConfig, Simulator
from service.keys import Keys
from service.resources import open_sync_resources
from service.settings import Needs, Settings
from service.sync import subscription
from service.sync.imports import Imports
from service.sync.mirror import Mirror
from service.sync.reconcile import Reconciler
from workers import jobs

SIM_TOKEN = "sim-token-subscription"


@pytest.fixture
def sim_settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(
        {
            **env,
            "KOMMO_BASE_URL": "http://kommo.test",
            "KOMMO_TOKEN": SIM_TOKEN,
            "PUBLIC_URL": "https://sync.example.com/",
        },
        Needs.DATABASE | Needs.REDIS | Needs.KOMMO,
    )


async def test_install_check_and_heal(sim_settings: Settings) -> None:
    sim = Simulator(
        SimConfig(leads=5, contacts=5, token=SIM_TOKEN, rate_limit=RateLimitConfig(rate=0))
    )
    url = subscription.destination(sim_settings)
    assert url.startswith("https://sync.example.com/webhooks/kommo/")
    transport = httpx.ASGITransport(app=sim.app)
    async with open_sync_resources(sim_settings, kommo_transport=transport) as res:
        kommo = res.kommo
        before = await subscription.check(kommo, url)
        assert not before.ok and "no webhook" in before.problem
        assert sim_settings.webhook_secret is not None
        assert sim_settings.webhook_secret.value not in before.problem
        await subscription.install(kommo, url)
        assert (await subscription.check(kommo, url)).ok
        sim.webhooks.destinations[url].disabled = True  # Kommo gave up on us
        healed = await subscription.heal(kommo, url)
        assert not healed.ok and "disabled" in healed.problem
        assert (await subscription.check(kommo, url)).ok
    await sim.aclose()


def subscription_ok() -> float | None:
    return REGISTRY.get_sample_value("webhook_subscription_ok")


def resubscriptions() -> float:
    return REGISTRY.get_sample_value("webhook_resubscriptions_total") or 0.0


async def test_the_worker_check_exports_its_verdict(sim_settings: Settings, redis: Redis) -> None:
    """The check_webhook job sets webhook_subscription_ok to what it found (0 when the hook is
    missing or disabled, though it subscribes again), counts the re-subscription, and exports
    NaN in a round another worker checks."""
    sim = Simulator(
        SimConfig(leads=5, contacts=5, token=SIM_TOKEN, rate_limit=RateLimitConfig(rate=0))
    )
    url = subscription.destination(sim_settings)
    checked = Keys(sim_settings.redis_prefix).webhook_checked
    transport = httpx.ASGITransport(app=sim.app)
    async with open_sync_resources(sim_settings, kommo_transport=transport) as res:
        mirror = Mirror(res, 31000001)
        ctx = {"worker": jobs.Worker(res, mirror, Reconciler(mirror), Imports(mirror))}
        before = resubscriptions()
        assert await jobs.check_webhook(ctx) is False  # none yet: broken, subscribed now
        assert subscription_ok() == 0
        assert resubscriptions() == before + 1
        assert url in sim.webhooks.destinations

        await redis.delete(checked)  # the next round
        assert await jobs.check_webhook(ctx) is True
        assert subscription_ok() == 1
        assert resubscriptions() == before + 1

        sim.webhooks.destinations[url].disabled = True  # Kommo gave up on us
        await redis.delete(checked)
        assert await jobs.check_webhook(ctx) is False
        assert subscription_ok() == 0
        assert resubscriptions() == before + 2
        assert not sim.webhooks.destinations[url].disabled

        assert await jobs.check_webhook(ctx) is False  # another worker has checked this round
        value = subscription_ok()
        assert value is not None and math.isnan(value)
        assert resubscriptions() == before + 2
    await sim.aclose()
