"""Deployment settings: environment variables, a ``.env`` file and a config file, as one model.

Importing this package imports ``pydantic-settings``; ``import router_middleware`` does
not, and reaches :class:`RouterSettings` lazily. The modules, one concept each:

- ``_model``: :class:`RouterSettings` and :class:`ProviderSettings`;
- ``_sources``: reading and merging the layers;
- ``_origin``: where each value came from, and messages that say so without values;
- ``_schema``: variable names, and the schema walked generically;
- ``_reference``: the variable reference (``docs/ENV.md``);
- ``_binding``: routers built and reloaded from settings.

Example:
    >>> from router_middleware.settings import RouterSettings
    >>> RouterSettings(max_attempts=4, _env_file=None).to_router_config().max_attempts
    4
"""

from ._binding import reload_from_settings, router_from_settings
from ._model import ProviderSettings, RouterSettings
from ._reference import env_reference

__all__ = [
    "ProviderSettings",
    "RouterSettings",
    "env_reference",
    "reload_from_settings",
    "router_from_settings",
]
