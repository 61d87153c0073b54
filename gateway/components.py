"""Builds the gateway and its collaborators from a config (the composition root)."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from experts.registry import BuildContext, ExpertSet, build_expert
from gateway.config import Config, MemoryConfig
from gateway.memory.bundle import Memory
from gateway.memory.cache import ResponseCache
from gateway.memory.pending import LocalConversationMemory
from gateway.memory.redis_conversation import RedisConversationMemory
from gateway.memory.redis_store import RedisStore
from gateway.memory.store import LocalStore
from gateway.routing.embedder import SentenceTransformerEmbedder, resolve_embedder_path
from gateway.service import Gateway


def build_gateway(config: Config, home: Path, memory: Memory | None = None) -> Gateway:
    """Construct the gateway for `config` (nothing starts yet; `Gateway.start` does), with
    `memory` (default: built from the config)."""
    routing_cache = home / "router"  # fitted heads, and the embedder's ONNX export
    embedder = SentenceTransformerEmbedder(
        resolve_embedder_path(config.embedder.model),
        device=config.embedder.device,
        precision=config.embedder.precision,
        batch_size=config.embedder.batch_size,
        batch_wait_ms=config.embedder.batch_wait_ms,
        cache_size=config.embedder.cache_size,
        runtime=config.embedder.runtime,
        onnx_dir=routing_cache / "onnx",  # where `taskgate eval` looks too
    )
    context = BuildContext(cache_dir=home)
    experts = ExpertSet.from_specs(config.experts, context)
    return Gateway(
        config,
        embedder,
        experts,
        memory if memory is not None else build_memory(config),
        make_expert=lambda spec: build_expert(spec, context),
        cache_dir=routing_cache,
    )


def build_memory(config: Config) -> Memory:
    settings = config.memory
    if settings.backend == "redis":
        return _redis_memory(config)
    snapshot = Path(settings.snapshot).expanduser() if settings.snapshot else None
    exemplars = LocalStore(snapshot=snapshot)
    cache_store = LocalStore()
    conversation = LocalConversationMemory(max_entries=settings.max_entries)
    cache = ResponseCache(cache_store, threshold=config.cache.threshold)
    return Memory(conversation, exemplars, cache, cache_store)


def _redis_memory(config: Config) -> Memory:
    settings = config.memory
    client = redis_client(settings)

    def store(namespace: str) -> RedisStore:
        return RedisStore(
            client,
            namespace=namespace,
            prefix=settings.prefix,
            queue_limit=settings.queue_limit,
            vector_search=settings.vector_search,
            timeout_s=settings.timeout_s,
        )

    exemplars, cache_store = store("exemplars"), store("cache")
    conversation = RedisConversationMemory(
        client,
        prefix=settings.prefix,
        timeout_s=settings.timeout_s,
        fallback=LocalConversationMemory(max_entries=settings.max_entries),
    )
    cache = ResponseCache(cache_store, threshold=config.cache.threshold)
    return Memory(
        conversation, exemplars, cache, cache_store, closers=(client.aclose,), redis=client
    )


def redis_client(settings: MemoryConfig) -> Redis:
    assert settings.url is not None
    return Redis.from_url(
        settings.url,
        socket_timeout=settings.timeout_s,
        socket_connect_timeout=settings.timeout_s,
        health_check_interval=30,
        protocol=2,
    )
