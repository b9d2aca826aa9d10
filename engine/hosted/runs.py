"""One shop's run in hosted mode: the same Runner as `mapper run`, with that shop's values.

The mapping is loaded and compiled once per process (:class:`CompiledMapping`); a shop's run
binds only what differs per shop: the ``source`` and ``destination`` sections are read again
with the shop's URL and keys in place of ``${CCVSHOP_URL}``, ``${CCVSHOP_PUBLIC_KEY}``, … (a
YAML read of a few milliseconds), everything compiled (expressions, stages, writer, XSD) is
shared. The state is the shared store seen through :class:`ShopState` (the shop's own scope),
the outbox is ``$MAPPER_OUTBOX/<shop id>/``.
"""

from __future__ import annotations

import functools
import inspect
import os
from pathlib import Path
from typing import Any, Callable

from engine.errors import MapperError
from engine.ops.state.sql import SqlStateStore
from engine.hosted.shops import Shop, ShopRegistry, ShopSecrets, scope

__all__ = ["CompiledMapping", "ShopState", "run_shop", "shop_environment"]


@functools.lru_cache(maxsize=None)
def _mapping_position(cls: type, name: str) -> int | None:
    """Where a store method takes its ``mapping`` (the scope), or None if it takes none."""
    try:
        params = list(inspect.signature(getattr(cls, name)).parameters)
    except (TypeError, ValueError):
        return None
    return params.index("mapping") - 1 if "mapping" in params else None


class ShopState:
    """The state store as one shop's runs see it: every scope ``m`` becomes ``<shop>/<m>``.

    The engine scopes everything it stores by the mapping's name; in hosted mode that name
    is made the shop's own here, so the runner, sinks and debtor register work unchanged.
    """

    def __init__(self, store: SqlStateStore, shop_id: str, owns: bool = False):
        """``owns``: the store is this view's own and closes with it (a command's)."""
        self._store, self._shop_id, self._owns = store, shop_id, owns

    @property
    def shop(self) -> Shop:
        return ShopRegistry(self._store).get(self._shop_id)

    @property
    def secrets(self) -> ShopSecrets:
        return ShopRegistry(self._store).secrets(self._shop_id)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        pos = _mapping_position(type(self._store), name) if callable(attr) else None
        if pos is None:
            return attr
        shop_id = self._shop_id

        def scoped(*args: Any, **kwargs: Any) -> Any:
            if "mapping" in kwargs:
                kwargs["mapping"] = scope(shop_id, kwargs["mapping"])
            elif len(args) > pos:
                args = (*args[:pos], scope(shop_id, args[pos]), *args[pos + 1:])
            return attr(*args, **kwargs)
        return scoped

    def __enter__(self) -> "ShopState":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owns:
            self._store.close()                # else the shared store outlives one shop's run


def shop_environment(shop: Shop, secrets: ShopSecrets, base: dict[str, str] | None = None) -> dict[str, str]:
    """The variables a mapping reads for this shop (the process's own, with the shop's over them)."""
    env = dict(os.environ if base is None else base)
    for name in [k for k in env if k.startswith(("CCVSHOP_", "ASPERION_"))]:
        del env[name]                          # never another shop's (or the operator's) keys
    env.update(CCVSHOP_URL=shop.api_root, CCVSHOP_PUBLIC_KEY=secrets.ccv_public,
               CCVSHOP_SECRET_KEY=secrets.ccv_secret, MAPPER_DEBTOR_KEY=secrets.debtor_key,
               MAPPER_PLAN=shop.plan)
    for key, value in (secrets.asperion or {}).items():
        env[f"ASPERION_{key.upper()}"] = value
    return env


class CompiledMapping:
    """A mapping compiled once; :meth:`for_environment` binds a shop's source and destination."""

    def __init__(self, path: str | Path, environ: dict[str, str] | None = None):
        from engine.config.mapping import load_mapping
        self.path = path
        self.mapping = load_mapping(path, environ=environ)

    def for_environment(self, environ: dict[str, str]) -> Any:
        from engine.config.mapping import reread_sections
        return reread_sections(self.mapping, environ)


def run_shop(shop_id: str, *, store: SqlStateStore, registry: ShopRegistry, compiled: CompiledMapping,
             outbox_root: str | Path, wait_seconds: float = 0.0, since=None, until=None,
             open_source: Callable[[Any], Any] | None = None) -> Any:
    """Run one shop's day (or back-fill); returns the RunResult, or None if the shop is not active.

    Raises what `mapper run` raises; the caller records the outcome in the registry.
    """
    from engine.convert.debtors import build_matcher
    from engine.io.outbox import Outbox
    from engine.ops.runner import Runner
    from engine.io.sources.open import open_source as default_open_source

    shop = registry.get(shop_id)
    if shop.status != "active":
        return None
    env = shop_environment(shop, registry.secrets(shop_id))
    m = compiled.for_environment(env)
    state = ShopState(store, shop_id)
    source = (open_source or default_open_source)(m)
    try:
        matcher, _ = build_matcher(m, state, readonly=False, environ=env)
        outbox = Outbox.for_mapping(m, Path(outbox_root) / shop_id, owner=f"shop {shop_id}")
        with state.run_lock(m.name, wait_seconds):
            if registry.get(shop_id).status != "active":   # removed while it waited
                return None
            runner = Runner(m, source, state, outbox, plan=shop.plan, since=since, until=until,
                            matcher=matcher)
            return runner.run()
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def outcome_words(exc: BaseException) -> str:
    """A failed run in one line for the operator (no traceback, no secret)."""
    if isinstance(exc, MapperError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
