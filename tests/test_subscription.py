import httpx
import pytest

from kommo_sim import RateLimitConfig, SimConfig, Simulator
from service.resources import open_sync_resources
from service.settings import Needs, Settings
from service.sync import subscription

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
