"""The Kafka bus (kafka-python): acks=all idempotent producer, manual-commit group consumers,
explicit topic creation (the broker may not auto-create topics, and we never rely on it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.message import Message
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kerrors
from kafka.admin import OffsetSpec
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from concord.bus.base import Bus
from concord.bus.consumer import Consumer, T
from concord.bus.decoding import protobuf_decoder, raw_decoder
from concord.bus.records import (
    BusError,
    Delivery,
    Handler,
    M,
    RawHandler,
    RawRecord,
    dlq_topic,
    encode_key,
    event_headers,
)

log = logging.getLogger(__name__)

DLQ_SEND_TIMEOUT_SECONDS = 30.0
SESSION_TIMEOUT_MS = 10_000  # defaults of settings.kafka (consumer_config overrides them)
HEARTBEAT_INTERVAL_MS = 1_000
# A member whose join has not ended in an assignment after this long is replaced by a new one.
# kafka-python 3.0.12 can leave a JoinGroup/SyncGroup round in flight for good (heartbeats are
# off during it, so the broker evicts the member, which then waits on that round forever):
# seen in the suite as a worker that never received a record after a rebalance at startup.
JOIN_STUCK_SECONDS = 45.0


def _headers_out(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in headers.items()]


def _headers_in(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    return {k: (v or b"").decode(errors="replace") for k, v in headers or ()}


class KafkaConsumerMember(Consumer[T]):
    """A group member: poll -> handle -> commit the batch; commits finished offsets when
    partitions are revoked and on stop; `enable_auto_commit` is off."""

    def __init__(
        self,
        bus: KafkaBus,
        topic: str,
        group: str,
        handler: Callable[[T, Delivery], None],
        decode: Callable[[RawRecord], T],
        config: dict[str, Any],
    ) -> None:
        super().__init__(
            topic,
            group,
            handler,
            decode,
            max_retries=bus.max_retries,
            retry_backoff_seconds=bus.retry_backoff_seconds,
            outage_retry_seconds=bus.outage_retry_seconds,
        )
        self._bus = bus
        self._config = config
        self._consumer: KafkaConsumer | None = None
        self._finished: dict[TopicPartition, int] = {}
        self.assigned: set[int] = set()  # partitions held now (read from other threads: a copy)
        self.join_stuck_seconds = JOIN_STUCK_SECONDS
        self._joining_since: float | None = None  # monotonic time a (re)join began; None: done
        self.rejoins = 0  # members replaced because their join never ended

    def _open(self) -> None:
        config = {
            # A member that joined before it saw a new topic's partitions is assigned nothing
            # until its metadata refreshes (5 min by default): refresh within seconds.
            "metadata_max_age_ms": 5000,
            # A member that died without leaving holds its partitions until its session
            # expires: kafka-python's 45 s default kept a replacement idle for 48 s.
            "session_timeout_ms": SESSION_TIMEOUT_MS,
            "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
            **self._config,
        }
        self._consumer = KafkaConsumer(
            bootstrap_servers=self._bus.bootstrap_servers,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **config,
        )
        # Learn the topic's partitions before joining, so the first assignment includes them.
        self._consumer.partitions_for_topic(self.topic)
        self._consumer.subscribe([self.topic], listener=_Rebalance(self))
        self._joining_since = time.monotonic()

    def _poll(self, timeout: float) -> Sequence[RawRecord]:
        assert self._consumer is not None
        since = self._joining_since
        if since is not None and time.monotonic() - since > self.join_stuck_seconds:
            self._replace_member(time.monotonic() - since)
        assert self._consumer is not None
        polled = self._consumer.poll(timeout_ms=int(timeout * 1000))
        return [
            RawRecord(
                r.topic, r.partition, r.offset, r.key, r.value, _headers_in(r.headers), r.timestamp
            )
            for records in polled.values()
            for r in records
        ]

    def _mark_done(self, record: RawRecord) -> None:
        self._finished[TopicPartition(record.topic, record.partition)] = record.offset + 1

    def _commit(self, partitions: set[TopicPartition] | None = None) -> None:
        offsets = {
            tp: OffsetAndMetadata(off, "", -1)
            for tp, off in self._finished.items()
            if partitions is None or tp in partitions
        }
        if not offsets or self._consumer is None:
            return
        try:
            self._consumer.commit(offsets=offsets)
        except kerrors.CommitFailedError:
            # The group rebalanced past us: these partitions are someone else's now and they
            # will re-read from the last commit (at-least-once), so forget them.
            log.warning(
                "commit of %s rejected after a rebalance; records will be redelivered", offsets
            )
        except kerrors.KafkaError:
            log.warning("commit failed; will retry with the next batch", exc_info=True)
            return
        for tp, meta in offsets.items():
            if self._finished.get(tp) == meta.offset:
                del self._finished[tp]

    def _rewind(self, records: Sequence[RawRecord]) -> None:
        assert self._consumer is not None
        first: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            first[tp] = min(first.get(tp, r.offset), r.offset)
        for tp, offset in first.items():
            self._consumer.seek(tp, offset)

    def _send_to_dlq(self, record: RawRecord, headers: dict[str, str]) -> None:
        self._bus.send_raw(
            dlq_topic(record.topic),
            record.key,
            record.value,
            headers,
            timeout=DLQ_SEND_TIMEOUT_SECONDS,
        )

    def _close(self, commit: bool) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        if commit:
            self._consumer = consumer
            self._commit()
            self._consumer = None
        # close() sends LeaveGroup, so the group rebalances now rather than after the session
        # timeout; autocommit=False because only our explicit commits may move offsets.
        consumer.close(autocommit=False)
        self.assigned = set()

    def _replace_member(self, waited: float) -> None:
        """Leave the group and join again as a new member (nothing is lost: what this member
        finished was committed when its partitions were revoked; the rest is read again)."""
        log.warning(
            "%s/%s: no assignment %.0f s after joining; rejoining as a new member",
            self.topic,
            self.group,
            waited,
        )
        self.rejoins += 1
        self._close(commit=True)
        self._open()

    def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._joining_since = time.monotonic()  # a rebalance began: a join follows
        self._commit(set(revoked))
        for tp in revoked:
            self._finished.pop(tp, None)
        self.assigned = self.assigned - {tp.partition for tp in revoked}

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        # Called at the end of every join, also with no partitions (more members than them).
        self._joining_since = None
        self.assigned = self.assigned | {tp.partition for tp in assigned}


class _Rebalance(ConsumerRebalanceListener):
    # Runs inside poll(), on the consumer thread, between batches.
    def __init__(self, member: KafkaConsumerMember) -> None:
        self._member = member

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._member.on_revoked(set(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._member.on_assigned(set(assigned))


class KafkaBus(Bus):
    """Bus on a Kafka cluster.

    Args:
        bootstrap_servers: comma-separated host:port list.
        partitions: partition count of topics this bus creates.
        replication_factor: replication of topics this bus creates.
        producer_config / consumer_config / admin_config: extra kafka-python settings
            (e.g. shorter `session_timeout_ms` in tests).
        group_prefix, max_retries, retry_backoff_seconds, outage_retry_seconds: see Bus.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        partitions: int = 3,
        replication_factor: int = 1,
        group_prefix: str = "",
        max_retries: int = 3,
        retry_backoff_seconds: float = 0.2,
        outage_retry_seconds: float = 300.0,
        client_id: str = "concord",
        producer_config: dict[str, Any] | None = None,
        consumer_config: dict[str, Any] | None = None,
        admin_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            group_prefix=group_prefix,
            max_retries=max_retries,
            retry_backoff_seconds=retry_backoff_seconds,
            outage_retry_seconds=outage_retry_seconds,
        )
        self.bootstrap_servers = bootstrap_servers
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.client_id = client_id
        self._consumer_config = dict(consumer_config or {})
        self._admin_config = dict(admin_config or {})
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks="all",  # a publish counts once every in-sync replica has it
            enable_idempotence=True,  # retries never duplicate or reorder within a partition
            **(producer_config or {}),
        )
        self._lock = threading.Lock()
        self._known_topics: set[str] = set()
        self._pending: list[Any] = []  # futures not yet checked by flush()
        self._admin: KafkaAdminClient | None = None
        self._closed = False

    # -- topics --------------------------------------------------------------------------------
    def _admin_client(self) -> KafkaAdminClient:
        if self._admin is None:
            self._admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers,
                client_id=f"{self.client_id}-admin",
                **self._admin_config,
            )
        return self._admin

    def ensure_topics(self, topics: Sequence[str], partitions: int | None = None) -> None:
        with self._lock:
            missing = [t for t in dict.fromkeys(topics) if t not in self._known_topics]
            if not missing:
                return
            admin = self._admin_client()
            spec = {
                t: {
                    "num_partitions": partitions or self.partitions,
                    "replication_factor": self.replication_factor,
                }
                for t in missing
            }
            try:
                admin.create_topics(spec, raise_errors=False)
                # CreateTopics answers before every partition has a leader; wait for that.
                admin.wait_for_topics(missing, timeout_ms=30000)
            except kerrors.KafkaError as exc:
                raise BusError(f"could not create topics {missing}: {exc!r}") from exc
            self._known_topics.update(missing)

    # -- publishing ----------------------------------------------------------------------------
    def publish(
        self,
        topic: str,
        key: str | bytes,
        message: Message,
        headers: dict[str, str] | None = None,
    ) -> None:
        future = self._send(
            topic, encode_key(key), message.SerializeToString(), event_headers(message, headers)
        )
        with self._lock:
            self._pending.append(future)
            if len(self._pending) > 10_000:  # callers that never flush: keep only the unsettled
                self._pending = [f for f in self._pending if not f.succeeded()]

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: dict[str, str],
        timeout: float | None = None,
    ) -> None:
        """Write raw bytes and wait for the acknowledgement (used for the DLQ).

        Raises:
            BusError: when not acknowledged within `timeout` seconds.
        """
        future = self._send(topic, key, value, headers)
        try:
            future.get(timeout=timeout)
        except kerrors.KafkaError as exc:
            raise BusError(f"write to {topic} not acknowledged: {exc!r}") from exc

    def _send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: dict[str, str]
    ) -> Any:
        if self._closed:
            raise BusError("bus is closed")
        self.ensure_topics([topic])
        try:
            return self._producer.send(topic, key=key, value=value, headers=_headers_out(headers))
        except kerrors.KafkaError as exc:
            raise BusError(f"publish to {topic} refused: {exc!r}") from exc

    def flush(self, timeout: float | None = None) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        try:
            self._producer.flush(timeout=timeout)
        except kerrors.KafkaError as exc:
            raise BusError(f"flush did not finish: {exc!r}") from exc
        failed = [f.exception for f in pending if f.failed()]
        if failed:
            raise BusError(f"{len(failed)} of {len(pending)} records not delivered: {failed[0]!r}")

    # -- consuming -----------------------------------------------------------------------------
    def _member(
        self,
        topic: str,
        group: str,
        handler: Callable[[T, Delivery], None],
        decode: Callable[[RawRecord], T],
    ) -> KafkaConsumerMember[T]:
        self.ensure_topics([topic, dlq_topic(topic)])
        config = {"client_id": f"{self.client_id}-{group}", **self._consumer_config}
        return KafkaConsumerMember(self, topic, self.group_id(group), handler, decode, config)

    def subscribe(
        self, topic: str, group: str, handler: Handler[M], message_type: type[M]
    ) -> KafkaConsumerMember[M]:
        return self._member(topic, group, handler, protobuf_decoder(message_type))

    def subscribe_raw(
        self, topic: str, group: str, handler: RawHandler
    ) -> KafkaConsumerMember[bytes]:
        return self._member(topic, group, handler, raw_decoder)

    # -- introspection -------------------------------------------------------------------------
    def committed(self, topic: str, group: str) -> dict[int, int]:
        gid = self.group_id(group)
        with self._lock:
            offsets = self._admin_client().list_group_offsets({gid: None}).get(gid, {})
        return {
            tp.partition: meta.offset
            for tp, meta in offsets.items()
            if tp.topic == topic and meta.offset >= 0
        }

    def end_offsets(self, topic: str) -> dict[int, int]:
        with self._lock:
            admin = self._admin_client()
            described = admin.describe_topics([topic])
            parts = [p["partition_index"] for t in described for p in t.get("partitions") or []]
            specs = {TopicPartition(topic, p): OffsetSpec.LATEST for p in parts}
            found = admin.list_partition_offsets(specs) if specs else {}
        return {tp.partition: o.offset for tp, o in found.items()}

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush(timeout=30)
        finally:
            self._closed = True
            self._producer.close(timeout=10)
            if self._admin is not None:
                self._admin.close()
