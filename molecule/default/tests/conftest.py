"""The scenario's modules run in file order, except test_to_fleet.py: it turns the host into a fleet, so it runs
after every other check of the single host; then test_offline.py, whose count of connection attempts covers them all. The engine fixtures several modules share."""

import pytest
from test_front import env_value

LAST = ("test_to_fleet.py", "test_offline.py")


def pytest_collection_modifyitems(items):
    # stable: the others keep their order
    items.sort(key=lambda item: LAST.index(item.path.name) + 1 if item.path.name in LAST else 0)


@pytest.fixture(scope="module")
def api_key(host):
    """The engine key, as Open WebUI's env file holds it."""
    return env_value(host, "OPENAI_API_KEYS").split(";")[0]


@pytest.fixture(scope="module")
def engine_base(host):
    """The engine's own URL (no /v1), as Open WebUI reaches it."""
    return env_value(host, "OPENAI_API_BASE_URLS").split(";")[0].rsplit("/v1", 1)[0]


@pytest.fixture(scope="module")
def engine(host):
    """The active engine unit."""
    active = [u for u in ("llamacpp.service", "vllm.service") if host.run(f"systemctl is-active --quiet {u}").rc == 0]
    assert len(active) == 1, f"expected one active engine unit, got {active}"
    return active[0]
