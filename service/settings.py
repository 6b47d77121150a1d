"""Settings, built once at start-up from the environment (prefix ``HOMEWARD_``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Default locations are the source checkout's (where `make run` put the models), not the
# current folder, so `homeward` works the same from any folder; set them for an install.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

ModelBackend = Literal["auto", "sface", "insightface", "fusion", "dlib"]
IndexType = Literal["flat", "hnsw", "pq", "auto"]
IndexBackend = Literal["faiss", "milvus"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HOMEWARD_", env_file=None, extra="ignore")

    data_dir: Path = PROJECT_ROOT / "index"
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file in the data dir"
    )
    model_backend: ModelBackend = Field(
        default="sface",
        description="sface (YuNet + SFace, licence-free); insightface (the pack "
        "insightface_pack); fusion (the pack's detector, then SFace and the pack's "
        "recogniser, cosines averaged); dlib; auto (insightface if its pack is on disk, "
        "else sface). The InsightFace packs are for non-commercial research use only",
    )
    model_dir: Path = PROJECT_ROOT / "models"
    insightface_pack: str = "buffalo_l"
    index_backend: IndexBackend = Field(
        default="faiss",
        description="faiss (embedded, in the server's memory) or milvus (HOMEWARD_MILVUS_URI)",
    )
    index_type: IndexType = Field(
        default="flat",
        description="flat (exact); pq (FAISS only: a scan of 4-bit product-quantised codes, "
        "the best 2000 re-scored exactly); hnsw (approximate graph, exact scores); or auto "
        "(flat for small galleries; from about 20k 128-D or 5k 512-D templates, pq with "
        "FAISS and hnsw with Milvus)",
    )
    milvus_uri: str | None = Field(
        default=None,
        description="a Milvus server (http://host:19530) or a Milvus Lite file (*.db, one "
        "process only); default: milvus.db in the data dir",
    )

    worker_threads: int = Field(default=2, ge=1, le=256, description="pool for blocking work")
    inference_threads: int = Field(
        default=1,
        ge=1,
        le=256,
        description="onnxruntime intra-op threads per inference: 1 runs each in its "
        "request's own thread, so concurrent requests use every core (a session's intra-op "
        "pool is shared: at 2, four concurrent matches ran at half the throughput); more "
        "only lowers one request's latency on an otherwise idle machine",
    )
    faiss_threads: int = Field(default=1, ge=1, le=256)
    reembed_processes: int = Field(
        default_factory=lambda: min(2, os.cpu_count() or 1),
        ge=1,
        le=64,
        description="processes that embed stored photos again after a model change "
        "(`homeward index rebuild --reembed`), one inference thread each; default: the "
        "cores, at most 2",
    )

    max_upload_bytes: int = Field(default=15 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(default=40_000_000, ge=64 * 64)
    detect_max_side: int = Field(
        default=1280,
        ge=320,
        le=8192,
        description="faces are found on a copy of the photo at most this long a side "
        "(larger photos are scaled down for detection only; chips and the quality check "
        "use full resolution): bounds the detectors' time and memory",
    )
    fallback_max_pixels: int = Field(
        default=2560 * 1920,
        ge=80 * 80,
        description="pixels dlib's HOG fallback detector scans at most, upsampling "
        "included (a 1280x960 photo upsampled once): bounds its time",
    )
    max_faces_per_image: int = Field(default=10, ge=1, le=100)
    default_candidates: int = Field(default=20, ge=1, le=50)
    max_candidates: int = Field(default=50, ge=1, le=50)

    # a face below these is flagged with a quality issue, never refused (enrolled or matched)
    min_face_px: int = Field(default=40, ge=8, description="shorter side of the box")
    min_sharpness: float = Field(default=10.0, ge=0, description="Laplacian variance, 112px chip")
    max_yaw_degrees: float = Field(default=65.0, gt=0, le=90)
    min_detection_score: float = Field(default=0.6, gt=0, lt=1)
    aged_templates: bool = Field(
        default=True, description="enroll aged templates (age progression) beside originals"
    )
    template_transform: str = Field(
        default="default",
        description="fitted linear map of templates in the index: a .npz path, 'none', or "
        "'default' (the shipped file for the model id, if any)",
    )
    fallback_detector: bool = Field(
        default=True,
        description="when the backend's detector finds no face, try dlib's HOG detector",
    )
    tta_flip: bool = Field(
        default=True,
        description="average each face's template with its mirror image's "
        "(model id +flip; after changing it run `homeward reembed`)",
    )

    with_worker: bool | None = Field(
        default=None,
        description="run the background loops inside the API process; default: yes on "
        "SQLite (embedded), no otherwise (run `homeward worker`)",
    )

    admin_key: SecretStr | None = None
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    metrics_access: Literal["local", "token", "open", "off"] = Field(
        default="local",
        description="who may read /metrics: loopback clients only, a bearer token "
        "(HOMEWARD_METRICS_TOKEN), anyone, or nobody",
    )
    metrics_token: SecretStr | None = None

    # Secrets: the HMAC key for API-key hashes and the AES-256-GCM key for stored photos
    # (base64, 32 bytes each). Unset, they are read from ``secrets_file`` (created on first
    # start), which must lie outside the data dir: a copy of the data alone reveals nothing.
    secret_key: SecretStr | None = None
    photo_key: SecretStr | None = None
    secrets_file: Path = Path.home() / ".config" / "homeward" / "secrets.json"

    score_floor: float = Field(default=0.0, ge=-1, le=1, description="clients may only raise it")
    stands_out_rate: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="a candidate stands out from chance when its estimated false-match rate "
        "against the gallery is at most this",
    )
    duplicate_threshold: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description="score at or above which two cases are listed as possible duplicates; "
        "default: the one calibrated for the model (service/matching/data/duplicates.json)",
    )
    case_retention_days: float = Field(default=30, ge=0)
    sighting_retention_days: float = Field(default=90, ge=0)
    rate_limits: dict[str, int] = Field(
        default={"volunteer": 30, "reviewer": 600, "registry": 600, "admin": 1200},
        description="requests per minute per key, by role (a key gets its roles' highest)",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis holding the rate limits, shared by every API process (e.g. "
        "redis://127.0.0.1:6379/0); unset: each process limits on its own",
    )
    session_minutes: int = Field(
        default=480, ge=5, le=7 * 24 * 60, description="how long a web sign-in lasts"
    )
    sign_in_attempts: int = Field(
        default=10, ge=1, description="failed web sign-ins per client address per 10 minutes"
    )
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    webhook_backoff_seconds: float = Field(default=2.0, gt=0)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_allowed_targets: list[str] = Field(
        default=[],
        description="hosts or networks (CIDR) webhooks may reach although they are loopback, "
        "private or link-local; by default webhooks go to public addresses only",
    )

    @model_validator(mode="after")
    def _token_for_token_access(self) -> Settings:
        if self.metrics_access == "token" and not self.metrics_token:
            raise ValueError("HOMEWARD_METRICS_ACCESS=token needs HOMEWARD_METRICS_TOKEN")
        return self

    @field_validator("max_candidates")
    @classmethod
    def _cap(cls, value: int) -> int:
        return min(value, 50)

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "homeward.db"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"

    @property
    def is_embedded(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def runs_worker(self) -> bool:
        return self.is_embedded if self.with_worker is None else self.with_worker

    @property
    def photo_dir(self) -> Path:
        return self.data_dir / "photos"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "faiss"

    @property
    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str(self.data_dir / "milvus.db")
