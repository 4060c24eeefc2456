"""Concord: the platform library every service uses (config, serving, bus, vectors, registry, media)."""

__version__ = "0.1.0"
