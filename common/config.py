"""Environment-backed settings. Every knob has a documented default (see the README's configuration table)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from common.domain.callbacks import CallbackPolicy
from common.domain.errors import ConfigurationError
from common.domain.jobs import JobDefaults
from common.domain.options import Backend, Model, Runtime, parse


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None


def env_names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of names (ALLOWED_HOSTS), blanks dropped."""
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


def env_flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    project: str = "local-project"
    bucket: str = "images"
    topic: str = "classify-image"
    job_events_topic: str = "job-events"  # completion events ("" publishes none)
    backend: Backend = Backend.GCP
    local_root: str = "."
    local_photos: str = ""  # embedded: read all/ from this folder instead of LOCAL_ROOT/all (run PHOTOS --out DIR)
    # embedded: more prefixes read from folders anywhere (run --examples roses=FOLDER: examples/roses/ -> FOLDER)
    local_sources: tuple[tuple[str, str], ...] = ()
    model: Model = Model.RESNET50
    runtime: Runtime = Runtime.KERAS
    # A local path, a gs:// URI, "imagenet" (let Keras download on first use) or "" (none configured).
    weights: str = ""
    jobs_collection: str = "classification_jobs"
    predictions_collection: str = "predictions"
    counter_shards: int = 16
    default_top_k: int = 5
    default_min_score: float | None = None  # None: the tuned default of the job's match mode
    max_classes: int = 32
    max_body_bytes: int = 64 * 1024
    status_url_base: str = ""
    service_key: str = field(default="", repr=False)
    weights_cache_dir: str = "/tmp/imgclassify-weights"
    # The object detector (a LiteRT file, path or gs:// URI, built by imgclassify.detector_build): jobs whose
    # classes ImageNet lacks (people, horses) use it. "" = none: those classes are the classifier's alone.
    detector_model: str = ""
    # Callbacks into private networks (or this machine) only where the operator allows them; the embedded server
    # allows loopback: a local user's own webhook.
    callback_allow_private: bool = False
    callback_allow_loopback: bool = False
    # The Host names answered (common/routes.py check_host): empty answers any, as the deployed functions do (their
    # Host is Cloud Run's or API Gateway's). `imgclassify serve` and emulate's gateway always add the loopback names.
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        try:
            backend = parse(Backend, env.get("BACKEND", cls.backend), "backend")
            model = parse(Model, env.get("MODEL", cls.model), "model")
            runtime = parse(Runtime, env.get("MODEL_RUNTIME", cls.runtime), "runtime")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        settings = cls(
            project=env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCP_PROJECT") or cls.project,
            bucket=env.get("BUCKET", cls.bucket),
            topic=env.get("CLASSIFY_TOPIC", cls.topic),
            job_events_topic=env.get("JOB_EVENTS_TOPIC", cls.job_events_topic),
            backend=backend,
            local_root=env.get("LOCAL_ROOT", cls.local_root),
            model=model,
            runtime=runtime,
            weights=env.get("MODEL_WEIGHTS", cls.weights),
            jobs_collection=env.get("JOBS_COLLECTION", cls.jobs_collection),
            predictions_collection=env.get("PREDICTIONS_COLLECTION", cls.predictions_collection),
            counter_shards=_int(env, "COUNTER_SHARDS", cls.counter_shards),
            default_top_k=_int(env, "DEFAULT_TOP_K", cls.default_top_k),
            default_min_score=_float(env, "DEFAULT_MIN_SCORE", -1.0) if env.get("DEFAULT_MIN_SCORE") else None,
            max_classes=_int(env, "MAX_CLASSES", cls.max_classes),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", cls.max_body_bytes),
            status_url_base=env.get("STATUS_URL_BASE", cls.status_url_base),
            service_key=env.get("SERVICE_KEY", cls.service_key),
            weights_cache_dir=env.get("WEIGHTS_CACHE_DIR", cls.weights_cache_dir),
            detector_model=env.get("DETECTOR_MODEL", cls.detector_model),
            callback_allow_private=env_flag(env, "CALLBACK_ALLOW_PRIVATE"),
            callback_allow_loopback=env_flag(env, "CALLBACK_ALLOW_LOOPBACK"),
            allowed_hosts=env_names(env, "ALLOWED_HOSTS"),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if not 1 <= self.counter_shards <= 500:
            raise ConfigurationError("COUNTER_SHARDS must be between 1 and 500")

    @property
    def callback_policy(self) -> CallbackPolicy:
        return CallbackPolicy(allow_loopback=self.callback_allow_loopback, allow_private=self.callback_allow_private)

    @property
    def job_defaults(self) -> JobDefaults:
        return JobDefaults(bucket=self.bucket, top_k=self.default_top_k, min_score=self.default_min_score,
                           max_classes=self.max_classes, callbacks=self.callback_policy)
