import os
import subprocess
import sys

import pytest

from service.settings import ConfigError, Needs, Settings

BASE = {
    "DATABASE_URL": "postgresql://u:topsecretpw@db/x",
    "REDIS_URL": "redis://r:6379/0",
    "KOMMO_SUBDOMAIN": "examplecorp",
    "KOMMO_TOKEN": "tok-very-secret",
    "KOMMO_WEBHOOK_SECRET": "w" * 40,
    "WS_TOKENS": "a, b ,,c",
}
ALL = Needs.DATABASE | Needs.REDIS | Needs.KOMMO | Needs.WEB


def test_defaults_and_parsing() -> None:
    s = Settings.from_env(BASE, ALL)
    assert s.kommo_base_url == "https://examplecorp.kommo.com"
    assert s.rate_limit == 6.0 and s.reconcile_interval == 5.0
    assert s.phone_default_region == "PE"
    assert s.ws_tokens == frozenset({"a", "b", "c"})
    assert s.webhook_max_bytes == 1 << 20 and s.port == 8000
    assert "topsecretpw" not in repr(s) and "tok-very-secret" not in repr(s)


def test_base_url_overrides_subdomain() -> None:
    s = Settings.from_env({**BASE, "KOMMO_BASE_URL": "http://127.0.0.1:9999/"}, ALL)
    assert s.kommo_base_url == "http://127.0.0.1:9999"


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"REDIS_URL": ""}, "REDIS_URL"),
        ({"KOMMO_TOKEN": ""}, "KOMMO_TOKEN"),
        ({"KOMMO_SUBDOMAIN": "", "KOMMO_BASE_URL": ""}, "KOMMO_SUBDOMAIN"),
        ({"KOMMO_SUBDOMAIN": "a.b/c"}, "KOMMO_SUBDOMAIN"),
        ({"KOMMO_WEBHOOK_SECRET": "short"}, "KOMMO_WEBHOOK_SECRET"),
        ({"KOMMO_RATE_LIMIT": "fast"}, "KOMMO_RATE_LIMIT"),
        ({"KOMMO_RATE_LIMIT": "0"}, "KOMMO_RATE_LIMIT"),
        ({"RECONCILE_INTERVAL": "-1"}, "RECONCILE_INTERVAL"),
        ({"PHONE_DEFAULT_REGION": "XX"}, "PHONE_DEFAULT_REGION"),
        ({"WEBHOOK_MAX_BYTES": "1e6"}, "WEBHOOK_MAX_BYTES"),
        ({"PORT": "99999"}, "PORT"),
        ({"KOMMO_ACCOUNT_ID": "abc"}, "KOMMO_ACCOUNT_ID"),
        ({"WS_TOKENS": " , "}, "WS_TOKENS"),
        ({"KOMMO_CLIENT_ID": "id"}, "KOMMO_CLIENT_SECRET"),
    ],
)
def test_invalid_values_name_the_variable_and_hide_the_value(
    change: dict[str, str], name: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BASE, **change}, ALL)
    assert info.value.name == name
    message = str(info.value)
    assert name in message and "\n" not in message
    for secret in ("topsecretpw", "tok-very-secret", "short"):
        assert secret not in message


def test_process_without_database_url_exits_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = subprocess.run(
        [sys.executable, "-m", "service", "migrate"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "kommo-sync: configuration error: DATABASE_URL is required"
    ]
