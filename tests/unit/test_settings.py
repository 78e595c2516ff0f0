"""Settings: read from the environment, and unsafe values refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.contract.keys import Keys
from service.contract.settings import Settings, get_settings


def test_environment_prefix_lists_and_redis_url(monkeypatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://example:6379/2")
    monkeypatch.setenv("R2_MODELS", "tiny, qvhighlights")
    monkeypatch.setenv("R2_API_KEYS", "0123456789abcdef,fedcba9876543210")
    monkeypatch.setenv("R2_MAX_UPLOAD_BYTES", "1048576")
    settings = Settings()
    assert settings.redis_url == "redis://example:6379/2" and not settings.embedded
    assert settings.models == ["tiny", "qvhighlights"] and settings.model_name == "tiny"
    assert settings.api_key_values() == ["0123456789abcdef", "fedcba9876543210"]
    assert "0123456789abcdef" not in repr(settings)  # keys are secrets
    assert settings.max_upload_bytes == 1 << 20


def test_no_redis_url_means_embedded(monkeypatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("R2_REDIS_URL", raising=False)
    assert Settings().embedded


def test_cached_getter_reads_once(monkeypatch) -> None:
    get_settings.cache_clear()
    monkeypatch.setenv("R2_KEY_PREFIX", "first")
    assert get_settings().key_prefix == "first"
    monkeypatch.setenv("R2_KEY_PREFIX", "second")
    assert get_settings().key_prefix == "first"
    get_settings.cache_clear()


@pytest.mark.parametrize("overrides", [
    dict(max_upload_bytes=0),
    dict(chunk_bytes=600 << 20),  # over Redis's value limit territory
    dict(visibility_timeout_s=2, heartbeat_interval_s=5),  # a live worker's job could be stolen
    dict(heartbeat_ttl_s=5, heartbeat_interval_s=5),  # a live worker would look dead
    dict(api_keys=["short"]),
    dict(redis_url="http://localhost:6379"),
    dict(key_prefix="bad prefix*"),
    dict(device="gpu0"),
    dict(models=[]),
    dict(models=["a", "a"]),
    dict(models=["a"], default_model="b"),
    dict(max_queue_length=0),
    dict(job_max_attempts=0),
    dict(redis_cluster=True),  # a cluster needs the address of a node
    dict(redis_url="redis://a:7000,b:7000"),  # several hosts are a cluster's seeds
    dict(redis_url="redis://a:7000/3", redis_cluster=True),  # a cluster has database 0 only
    dict(redis_url="unix:///tmp/redis.sock", redis_cluster=True),
    dict(cold_dir="s3://bucket/prefix"),  # an object store is a ColdStore of its own
])
def test_unsafe_values_are_refused(overrides) -> None:
    with pytest.raises(ValidationError):
        Settings(**overrides)


def test_every_key_carries_the_prefix() -> None:
    keys = Keys("p")
    names = [keys.jobs, keys.job("j"), keys.request("h"), keys.video("v"), keys.blob("v"), keys.features("v", "f"),
             keys.beats, keys.alive, keys.workers, keys.metrics, Keys.chunk(keys.blob("v"), 3)]
    assert all(name.startswith("p:") for name in names)
    assert len(set(names)) == len(names)


def test_cluster_and_cold_tier_settings() -> None:
    settings = Settings(redis_url="redis://a:7000,b:7001/0", redis_cluster=True, cold_dir="/srv/cold")
    assert settings.redis_cluster and str(settings.cold_dir) == "/srv/cold"
    from service.store.connect import split_nodes

    assert split_nodes("redis://u:pw@a:7000,b:7001/0") == ("redis://u:pw@a:7000/0", [("b", 7001)])
