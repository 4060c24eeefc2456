"""The topics Concord's services exchange events on: one definition, read by every service,
pipeline, test and benchmark. A topic's dead-letter topic is `dlq_topic(topic)`
(`<topic>.dlq`, concord.bus.records)."""

from __future__ import annotations

INGEST = "concord.ingest"  # events_pb2.IngestRequest -> the retrieval ingest worker
INDEXED = "concord.indexed"  # events_pb2.Indexed, published by retrieval
GENERATION_JOBS = "concord.generation.jobs"  # events_pb2.GenerationJob -> the generator
GENERATED = "concord.generated"  # events_pb2.Generated, generator -> the scorer's auditor
AUDIT = "concord.audit"  # events_pb2.AuditResult, published by the scorer

ENTITIES = "concord.entities"  # linker_pb2.EntityEvent (upsert / delete), key = kb/entity id
ALIGN_JOBS = "concord.align.jobs"  # linker_pb2.AlignJob -> the linker, key = job id
ALIGNED = "concord.aligned"  # linker_pb2.AlignJobStatus, published by the linker
BIAS_REQUESTS = "concord.bias.requests"  # bias_pb2.BiasRequestEvent -> the bias detector
BIAS_VERDICTS = "concord.bias.verdicts"  # bias_pb2.BiasVerdictEvent, published by bias

ALL = (INGEST, INDEXED, GENERATION_JOBS, GENERATED, AUDIT, ENTITIES, ALIGN_JOBS, ALIGNED,
       BIAS_REQUESTS, BIAS_VERDICTS)
