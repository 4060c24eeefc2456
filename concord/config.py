"""One typed settings object for every Concord process.

Read once at start-up from `CONCORD_*` environment variables (nested with `__`, e.g.
`CONCORD_KAFKA__BOOTSTRAP_SERVERS`) and an optional TOML file named by `CONCORD_CONFIG`.
Embedded defaults need no configuration at all.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

SERVICE_NAMES: tuple[str, ...] = ("encoder", "retrieval", "scorer", "generator", "linker", "bias")
# Bind addresses that mean "every interface": a peer cannot dial them, so a service bound to
# one reaches the other services of its own process over loopback.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})
# cpu, cuda, cuda:N, or auto (the first visible GPU, else the CPU)
DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?)$"


def check_service_name(service: str, where: str = "") -> None:
    """Raises: ValueError naming `where` (a settings field, "" for none) and the known names."""
    if service not in SERVICE_NAMES:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}unknown service {service!r}; known: {', '.join(SERVICE_NAMES)}")


class TLSSettings(BaseModel):
    """TLS for every gRPC server and client of a process (`CONCORD_SERVING__TLS__CERT_FILE`...).
    One certificate serves both roles: a service presents it to callers, and to its peers
    when they require client certificates (mutual TLS)."""

    cert_file: Path  # PEM certificate (chain) this process presents
    key_file: Path  # its PEM private key
    ca_file: Path | None = None  # PEM CAs that verify servers (and, with client_auth, callers)
    client_auth: bool = False  # servers require a client certificate signed by ca_file (mTLS)
    server_name: str | None = None  # name checked on servers' certificates instead of the host
    # Kubernetes' gRPC probes cannot speak TLS: health (only health) is also served in plain
    # text on port + health_port_offset. 0: not at all.
    health_port_offset: int = Field(1000, ge=0, le=60000)

    @model_validator(mode="after")
    def _check_client_auth(self) -> TLSSettings:
        if self.client_auth and self.ca_file is None:
            raise ValueError("tls.client_auth needs tls.ca_file (the CA that signs callers)")
        return self


class ServingSettings(BaseModel):
    host: str = "127.0.0.1"  # bind address of every gRPC server
    base_port: int = Field(
        50051, ge=1, le=65535
    )  # service i listens on base_port + i (SERVICE_NAMES order)
    ports: dict[str, int] = Field(default_factory=dict)  # explicit per-service overrides
    metrics_port: int = Field(9464, ge=0, le=65535)  # Prometheus HTTP port; 0 disables it
    metrics_auth: bool = False  # /metrics needs the bearer token too (when auth_token is set)
    max_message_bytes: int = Field(64 * 1024 * 1024, gt=0)  # max gRPC request/response size
    grace_seconds: float = Field(5.0, ge=0)  # how long shutdown waits for in-flight calls
    auth_token: SecretStr | None = None  # bearer token; auth is off when unset
    default_deadline_seconds: float | None = Field(None, gt=0)  # applied when the caller sets none
    # Longest text (characters) an encoder or retrieval request may carry; longer ones are
    # refused (INVALID_ARGUMENT naming the text) before any tokenizing: the model reads 256
    # tokens at most, and a 1 MB text cost 2 s of tokenizer time in the shared batcher.
    max_text_chars: int = Field(10_000, ge=1)
    # Where this process dials the other services, e.g. {"encoder": "encoder:50051"} (compose
    # and the Helm chart set it to their service names). A service not named here is dialled
    # on this process's own host at its port: right for `concord up`, wrong across containers.
    addresses: dict[str, str] = Field(default_factory=dict)
    # Servers send GOAWAY to connections older than this, so long-lived gRPC clients
    # reconnect and spread over new replicas behind a Kubernetes Service. None: never.
    max_connection_age_seconds: float | None = Field(None, gt=0)
    tls: TLSSettings | None = None  # None: plaintext gRPC (inside a trusted network only)
    # How often a service serving `models:/NAME@ALIAS` asks the registry where the alias
    # points; when it moved, the new version loads in the background and is swapped in without
    # a failed call (concord.serving.reload). 0: resolve once at start. Versions and local
    # paths never move.
    reload_interval_seconds: float = Field(30.0, ge=0)

    def port_for(self, service: str) -> int:
        if service in self.ports:
            return self.ports[service]
        check_service_name(service)
        return self.base_port + SERVICE_NAMES.index(service)

    def address_for(self, service: str) -> str:
        """Returns: host:port at which this process reaches `service` (see `addresses`)."""
        if service in self.addresses:
            return self.addresses[service]
        host = "127.0.0.1" if self.host in WILDCARD_HOSTS else self.host
        return f"{host}:{self.port_for(service)}"

    @model_validator(mode="after")
    def _check_addresses(self) -> ServingSettings:
        for service, address in self.addresses.items():
            check_service_name(service, "addresses")
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"addresses.{service}: expected host:port, got {address!r}")
        return self


class DeviceSettings(BaseModel):
    """Where each service runs its models (CONCORD_DEVICE__DEFAULT, CONCORD_DEVICE__SERVICES)."""

    default: str = Field("auto", pattern=DEVICE_PATTERN)
    # Per-service overrides, e.g. {"generator": "cuda:1"} when one process hosts several.
    services: dict[str, str] = Field(default_factory=dict)
    # Autocast dtype on GPUs: auto picks bf16 where the GPU supports it; fp32 turns it off.
    # The CPU always runs fp32.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # torch intra-op threads; None: the CPU quota of the container (cgroup), else the cores.
    torch_threads: int | None = Field(None, ge=1)

    def for_service(self, service: str) -> str:
        """Returns: the device string configured for `service`."""
        return self.services.get(service, self.default)

    @model_validator(mode="after")
    def _check_services(self) -> DeviceSettings:
        for service, device in self.services.items():
            check_service_name(service, "services")
            if not re.match(DEVICE_PATTERN, device):
                raise ValueError(f"services.{service}: {device!r} is not cpu, cuda, cuda:N or auto")
        return self


class BatchingSettings(BaseModel):
    max_batch_size: int = Field(32, ge=1)  # items per model call
    # How long the first item waits for company. 0 (opportunistic batching): a batch is
    # whatever queued while the model was busy; measured in benchmarks/encoder_serving.py,
    # a 5 ms wait cost single callers 5-10 ms and gave lower throughput on 2 cores.
    max_delay_ms: float = Field(0.0, ge=0)
    max_queue: int = Field(1024, ge=1)  # queued items beyond this are shed (RESOURCE_EXHAUSTED)
    # Refuse at once (DEADLINE_EXCEEDED) a call whose deadline the queued work cannot meet, and
    # drop one whose deadline passed while queued. False: serve every admitted call in order
    # (the baseline benchmarks/overload.py compares against).
    deadline_admission: bool = True


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"  # comma-separated host:port
    group_prefix: str = "concord"  # consumer group = <prefix>.<service>
    partitions: int = Field(3, ge=1)  # partitions of the topics Concord creates
    max_retries: int = Field(3, ge=0)  # handler attempts beyond the first before the DLQ
    retry_backoff_seconds: float = Field(0.2, ge=0)  # first backoff; doubles per attempt
    # Longest a handler may run between polls before Kafka evicts the member. A generator
    # customization job fine-tunes for minutes inside one handler, hence 30 min, not 5.
    max_poll_interval_ms: int = Field(30 * 60 * 1000, ge=1000)
    # A member that dies without leaving (SIGKILL, a lost node) holds its partitions until
    # the broker misses its heartbeats this long; kafka-python's default is 45 s. The broker
    # refuses values below its group.min.session.timeout.ms (6 s by default).
    session_timeout_ms: int = Field(10_000, ge=1000)
    heartbeat_interval_ms: int = Field(1_000, ge=100)  # under a third of the session timeout
    # A dependency that is down (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED) is not
    # bad content: its record is retried with backoff, uncommitted, for this long before it
    # goes to the DLQ (reason "dependency-unavailable", to be replayed).
    outage_retry_seconds: float = Field(300.0, ge=0)


class QdrantSettings(BaseModel):
    url: str | None = None  # e.g. http://qdrant:6333; required when vectors == "qdrant"
    api_key: SecretStr | None = None
    prefer_grpc: bool = False


class ScorerSettings(BaseModel):
    # A registered scorer (models:/NAME@ALIAS) or a local directory written by the scorer
    # pipeline: its scorer.json names the encoder it scores with and its calibration.
    model: str = "models:/concord-scorer@production"
    # Attribution below -threshold flags a word (CLIP4DM's epsilon); requests may override.
    threshold: float = 5e-5
    max_pairs_per_request: int = Field(default=256, ge=1)
    max_text_chars: int = Field(default=2000, ge=1)
    # RefCLIPScore references: per pair, and in all of one request (each is encoded, and
    # 1,000 long references in one Score held the model for 22 s).
    max_references_per_pair: int = Field(default=8, ge=1)
    max_references_per_request: int = Field(default=256, ge=1)


class GeneratorSettings(BaseModel):
    model: str = "models:/concord-generator@production"
    max_steps: int = Field(default=250, ge=1)
    max_prompts_per_request: int = Field(default=16, ge=1)
    max_resolution: int = Field(default=128, ge=8)  # the model's own size is used when 0 is asked
    max_prompt_chars: int = Field(default=300, ge=1)
    default_steps: int = Field(default=50, ge=1)
    default_guidance_scale: float = 3.0


class LinkerSettings(BaseModel):
    # A registered linker package (models:/NAME@ALIAS) or a local directory written by the
    # linker pipeline: its linker.json names the encoder it featurizes with and the M3EL config.
    model: str = "models:/concord-linker@production"
    max_mentions_per_request: int = Field(default=64, ge=1)
    max_entities_per_request: int = Field(default=1024, ge=1)
    max_text_chars: int = Field(default=2000, ge=1)
    max_top_k: int = Field(default=100, ge=1)
    candidates: int = Field(default=32, ge=1)  # ANN candidates per modality before re-ranking
    max_graph_entities: int = Field(default=5000, ge=2)  # per graph in one AlignGraphs call
    max_images_per_entity: int = Field(default=16, ge=1)
    # per graph in one align job (SubmitAlignJob / concord.align.jobs); larger than a call's
    max_job_graph_entities: int = Field(default=200_000, ge=2)


class BiasSettings(BaseModel):
    # A registered bias package (models:/NAME@ALIAS) or a local directory written by the bias
    # pipeline: its bias.json names the encoder, the classifier config and the calibration.
    model: str = "models:/concord-bias@production"
    max_pairs_per_request: int = Field(default=64, ge=1)
    max_text_chars: int = Field(default=2000, ge=1)
    max_counterfactuals: int = Field(default=32, ge=1)
    threshold: float = Field(default=0.5, gt=0, lt=1)  # P(biased) at or above -> BIASED


class Settings(BaseSettings):
    """Everything a Concord process can be told; defaults are the embedded laptop setup."""

    model_config = SettingsConfigDict(
        env_prefix="CONCORD_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    home: Path = Path.home() / ".concord"  # embedded state: vectors, registry, artifacts
    bus: Literal["memory", "kafka"] = "memory"
    vectors: Literal["embedded", "qdrant"] = "embedded"
    mlflow_tracking_uri: str | None = None  # None -> sqlite + local artifacts under home
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # What the encoder serves: a registry URI (models:/NAME@ALIAS, models:/NAME/VERSION)
    # or a local model directory.
    encoder_model: str = "models:/concord-encoder@production"
    # "torch" runs the model in process; "triton" delegates inference through tritonclient
    # to any Open Inference Protocol v2 endpoint (Triton, or Concord's KServe runtime).
    encoder_backend: Literal["torch", "triton"] = "torch"
    triton_url: str | None = None  # host:port of the v2 gRPC endpoint when backend is triton
    triton_model: str = "concord-encoder"  # model name in that endpoint's repository
    serving: ServingSettings = ServingSettings()
    device: DeviceSettings = DeviceSettings()
    batching: BatchingSettings = BatchingSettings()
    kafka: KafkaSettings = KafkaSettings()
    scorer: ScorerSettings = ScorerSettings()
    generator: GeneratorSettings = GeneratorSettings()
    linker: LinkerSettings = LinkerSettings()
    bias: BiasSettings = BiasSettings()
    qdrant: QdrantSettings = QdrantSettings()

    @model_validator(mode="after")
    def _check_backends(self) -> Settings:
        if self.vectors == "qdrant" and not self.qdrant.url:
            raise ValueError("vectors='qdrant' needs qdrant.url (CONCORD_QDRANT__URL)")
        if self.encoder_backend == "triton" and not self.triton_url:
            raise ValueError("encoder_backend='triton' needs triton_url (CONCORD_TRITON_URL)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("CONCORD_CONFIG")
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise FileNotFoundError(f"CONCORD_CONFIG points at {path}, which is not a file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI: the configured server, else sqlite under home."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def vectors_dir(self) -> Path:
        return self.home / "vectors"


def load_settings(**overrides: Any) -> Settings:
    """Read settings once (env, then the optional TOML file); keyword overrides win.

    Raises:
        pydantic.ValidationError: naming every field that is wrong.
    """
    return Settings(**overrides)
