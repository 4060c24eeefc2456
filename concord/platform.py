"""The shared infrastructure of one Concord process: settings, bus, vector store, registry.

Created once per process and handed to every service it hosts, so that in `concord up`
all services share the embedded bus and the one handle that owns each Qdrant shard.
Each part is built on first use: a service that never indexes never opens a store.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from concord.config import Settings

if TYPE_CHECKING:
    from concord.bus import Bus
    from concord.registry import Registry
    from concord.vectors import VectorStore


class Platform:
    """Lazily built bus, vector store and registry for the services of one process.

    Args:
        settings: the process settings, read once at start-up.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def bus(self) -> Bus:
        from concord.bus import make_bus

        return make_bus(self.settings)

    @cached_property
    def vectors(self) -> VectorStore:
        from concord.vectors import open_store

        return open_store(self.settings)

    @cached_property
    def registry(self) -> Registry:
        from concord.registry import Registry

        return Registry.from_settings(self.settings)

    def close(self) -> None:
        """Close what was opened (consumers must be stopped first by their services)."""
        opened = self.__dict__
        if "bus" in opened:
            opened.pop("bus").close()
        if "vectors" in opened:
            opened.pop("vectors").close()
        opened.pop("registry", None)
