"""Concord beside the serving systems users would pick instead: Jina's clip-as-service
(`python -m benchmarks.peers`, after `benchmarks/peers/install.sh`). Nothing here imports
Concord or torch at package import: the peer's venv imports `benchmarks.peers.worker` too."""
