"""The shared Redis cache: exact and semantic lookups, in-flight coalescing, eviction."""

from tierq.cache.embedders import Embedder, HashingEmbedder, OpenAIEmbedder
from tierq.cache.entries import CacheEntry
from tierq.cache.keys import CacheKey, cache_key
from tierq.cache.store import CacheStore

__all__ = ["CacheEntry", "CacheKey", "CacheStore", "Embedder", "HashingEmbedder", "OpenAIEmbedder", "cache_key"]
