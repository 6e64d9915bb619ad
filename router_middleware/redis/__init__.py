"""State shared across replicas on Redis (the ``redis`` extra).

:class:`RedisStore` runs the router's state operations as Lua scripts on Redis, one round
trip each; :class:`FallbackStore` keeps the router limiting when Redis is slow or gone.
A router whose config sets ``state.url`` (``LLM_ROUTER_STATE__URL``) builds both itself::

    router = ResilientRouter(models, {"state": {"url": "redis://cache:6379/0"}, ...})
"""

from ._connect import shared_store
from ._fallback import FallbackStore
from ._store import RedisStore

__all__ = ["FallbackStore", "RedisStore", "shared_store"]
