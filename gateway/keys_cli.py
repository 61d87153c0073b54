"""`taskgate keys`: make, list and revoke API keys (stored as salted hashes).

A key is printed once, when it is made; the gateway keeps only its hash, in a keys file
(`--file`, or the config's `auth.keys_file`) or in the memory's Redis (`--redis`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from gateway.access.keys import KeyRecord, new_key
from gateway.access.keystore import KeyFileError, RedisKeys, read_key_file, write_key_file
from gateway.config import AuthConfig, MemoryConfig, load_config
from gateway.errors import AuthUnavailable
from gateway.settings import Settings

T = TypeVar("T")


def add_keys_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="make, list and revoke API keys")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    add = actions.add_parser("add", help="make a key; it is printed once")
    add.add_argument("--tenant", required=True, help="whose exemplars, cache and budget")
    add.add_argument("--admin", action="store_true", help="may reload and write exemplars")
    add.add_argument("--rpm", type=int, help="requests per minute (default: auth.limits)")
    add.add_argument("--tpm", type=int, help="tokens per minute (default: auth.limits)")
    add.set_defaults(run=_add)
    listing = actions.add_parser("list", help="the keys stored (ids and tenants, no secrets)")
    listing.set_defaults(run=_list)
    revoke = actions.add_parser("revoke", help="remove a key: it stops working at once")
    revoke.add_argument("id", help="the key's id (its second part: tg_<id>_...)")
    revoke.set_defaults(run=_revoke)
    for action in (add, listing, revoke):
        where = action.add_mutually_exclusive_group()
        where.add_argument("--file", type=Path, help="a keys file (auth.keys_file)")
        where.add_argument("--redis", action="store_true", help="the memory's Redis")
        action.add_argument(
            "--config", type=Path, help="take auth.keys_file / memory here (or TASKGATE_CONFIG)"
        )


class _Store:
    """The keys file or Redis, behind the three operations the command needs."""

    def __init__(self, file: Path | None, memory: MemoryConfig | None) -> None:
        self.file, self.memory = file, memory

    def describe(self) -> str:
        if self.file is not None:
            return str(self.file)
        assert self.memory is not None
        return f"Redis ({self.memory.prefix}:apikey:*)"

    def run(self, operation: Callable[[RedisKeys], Awaitable[T]]) -> T:
        memory = self.memory
        assert memory is not None
        from gateway.components import redis_client

        async def go() -> T:
            client = redis_client(memory)
            try:
                return await operation(
                    RedisKeys(client, prefix=memory.prefix, timeout_s=memory.timeout_s)
                )
            finally:
                await client.aclose()

        return asyncio.run(go())

    def records(self) -> list[KeyRecord]:
        if self.file is not None:
            return read_key_file(self.file)
        return self.run(lambda keys: keys.list())

    def add(self, record: KeyRecord) -> None:
        if self.file is not None:
            write_key_file(self.file, [*read_key_file(self.file), record])
        else:
            self.run(lambda keys: keys.add(record))

    def revoke(self, key_id: str) -> bool:
        if self.file is not None:
            records = read_key_file(self.file)
            kept = [r for r in records if r.id != key_id]
            if len(kept) == len(records):
                return False
            write_key_file(self.file, kept)
            return True
        return self.run(lambda keys: keys.revoke(key_id))


def _store(args: argparse.Namespace, settings: Settings) -> _Store:
    path = args.config or settings.config_path  # --config, else TASKGATE_CONFIG
    config = load_config(path, settings.env) if path is not None else None
    auth = config.auth if config is not None and isinstance(config.auth, AuthConfig) else None
    if args.file is not None:
        return _Store(args.file, None)
    if not args.redis and auth is not None and auth.keys_file:
        return _Store(Path(auth.keys_file).expanduser(), None)
    if args.redis or (auth is not None and auth.redis):
        memory = config.memory if config is not None else MemoryConfig()
        url = settings.redis_url or memory.url
        if url is None:
            raise _Usage("--redis needs TASKGATE_REDIS_URL, or --config with memory.url")
        return _Store(None, memory.model_copy(update={"backend": "redis", "url": url}))
    raise _Usage("say where keys live: --file FILE, --redis, or --config with auth.keys_file")


class _Usage(Exception):
    pass


def _guarded(command: Callable[[argparse.Namespace, _Store], int]) -> Callable[..., int]:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return command(args, _store(args, settings))
        except (_Usage, KeyFileError, AuthUnavailable, ValueError) as exc:
            print(f"taskgate keys: {exc}", file=sys.stderr)
            return 2

    return run


@_guarded
def _add(args: argparse.Namespace, store: _Store) -> int:
    made = new_key(args.tenant, admin=args.admin, rpm=args.rpm, tpm=args.tpm)
    store.add(made.record)
    print(made.token)
    role = "admin key" if args.admin else "key"
    print(
        f"{role} {made.record.id} for tenant {args.tenant}, stored as a salted hash in "
        f"{store.describe()}. Copy the key now: it is not shown again.",
        file=sys.stderr,
    )
    return 0


@_guarded
def _list(args: argparse.Namespace, store: _Store) -> int:
    for record in store.records():
        flags = " admin" if record.admin else ""
        limits = "".join(
            f" {name}={value}"
            for name, value in (("rpm", record.rpm), ("tpm", record.tpm))
            if value
        )
        print(f"{record.id}  tenant={record.tenant}{flags}{limits}")
    return 0


@_guarded
def _revoke(args: argparse.Namespace, store: _Store) -> int:
    if not store.revoke(args.id):
        print(f"taskgate keys: no key {args.id} in {store.describe()}", file=sys.stderr)
        return 1
    print(f"revoked {args.id}", file=sys.stderr)
    return 0
