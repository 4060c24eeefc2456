"""Shared pieces of Concord's alternative serving runtimes (KServe, Triton, BentoML).

Nothing here imports kserve, tritonclient or bentoml: `kserve` and `tritonclient.grpc` cannot
share an interpreter (both register the `inference` protobuf package), so each runtime module
imports its own client or server lazily, and this package only holds the tensor contract.
"""
