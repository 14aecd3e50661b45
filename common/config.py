"""The one configuration: every setting once, with its environment variable, its default and what it means. The
functions, `serve`, `emulate` and the CLI read this model (the CLI's flags and what a folder remembers come first,
imgclassify/cli/remembered.py); deploy.sh takes its defaults from it (`python -m common.config defaults`), and
docs/architecture.md's table of environment variables is generated from it (`python -m common.config table`,
checked by tests/test_config.py).
"""
from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from common.domain.callbacks import CallbackPolicy
from common.domain.errors import ConfigurationError
from common.domain.jobs import DEFAULT_MIN_SCORES, JobDefaults
from common.domain.options import Backend, MatchMode, Model, Runtime, parse


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


def setting(default: Any, env: str, doc: str, shown: str | None = None, **options: Any) -> Any:
    """A field read from `env`; `doc` and `shown` (the default as the table shows it) document it."""
    return field(default=default, metadata={"env": env, "doc": doc, "shown": shown}, **options)


@dataclass(frozen=True)
class Settings:
    project: str = setting("local-project", "GOOGLE_CLOUD_PROJECT", "project for Firestore/Pub/Sub (`GCP_PROJECT` "
                           "is read too)")
    bucket: str = setting("images", "BUCKET", "default bucket for jobs")
    topic: str = setting("classify-image", "CLASSIFY_TOPIC", "fan-out topic")
    job_events_topic: str = setting("job-events", "JOB_EVENTS_TOPIC", "completion events (empty: none published)")
    backend: Backend = setting(Backend.GCP, "BACKEND", "`local` serves a folder (`LOCAL_ROOT`) with SQLite and "
                               "in-process workers")
    local_root: str = setting(".", "LOCAL_ROOT", "the folder a `local` backend serves")
    # Set by the CLI, never from the environment: which folders a folder's job reads.
    local_photos: str = ""  # embedded: read all/ from this folder instead of LOCAL_ROOT/all (run PHOTOS --out DIR)
    local_sources: tuple[tuple[str, str], ...] = ()  # run --examples roses=FOLDER: examples/roses/ -> FOLDER
    model: Model = setting(Model.RESNET50, "MODEL", "`resnet50` or `mobilenet_v2`")
    runtime: Runtime = setting(Runtime.KERAS, "MODEL_RUNTIME", "`keras` or `litert` (a `.tflite` weights file "
                               "selects LiteRT; the CLI's `--runtime auto` picks by the file)")
    weights: str = setting("", "MODEL_WEIGHTS", "local path, `gs://` URI (fetched once per instance into "
                           "`WEIGHTS_CACHE_DIR`), `imagenet` (Keras downloads), `none` (random; benchmarks only)",
                           shown="none (the CLI: `imagenet`)")
    jobs_collection: str = setting("classification_jobs", "JOBS_COLLECTION", "Firestore collection of jobs")
    predictions_collection: str = setting("predictions", "PREDICTIONS_COLLECTION", "Firestore collection of stored "
                                          "predictions")
    counter_shards: int = setting(16, "COUNTER_SHARDS", "counter shards per job (write throughput ≈ 1 write/s/shard "
                                  "sustained in production Firestore), 1 to 500")
    default_top_k: int = setting(5, "DEFAULT_TOP_K", "a job's `top_k` when it asks for none")
    default_min_score: float | None = setting(None, "DEFAULT_MIN_SCORE", "a `hierarchy` job's `min_score` when it "
                                              "asks for none", shown=f"`{DEFAULT_MIN_SCORES[MatchMode.HIERARCHY]}`")
    default_match: MatchMode = setting(MatchMode.HIERARCHY, "DEFAULT_MATCH", "a job's `match` when it asks for "
                                       "none: `substring` gives old clients the old service's rule (`serve --match`)")
    max_classes: int = setting(32, "MAX_CLASSES", "classes a request may ask for")
    max_body_bytes: int = setting(64 * 1024, "MAX_BODY_BYTES", "largest request body")
    status_url_base: str = setting("", "STATUS_URL_BASE", "base of the `status_url` returned by create_job (and "
                                   "the public origin behind a gateway)", shown="empty (a relative URL)")
    service_key: str = setting("", "SERVICE_KEY", "when set, requests must carry `Authorization: <key>` (or "
                               "`Bearer <key>`); compared in constant time", shown="empty (off)", repr=False)
    weights_cache_dir: str = setting("/tmp/imgclassify-weights", "WEIGHTS_CACHE_DIR", "where gs:// weights and "
                                     "builds are cached")
    detector_model: str = setting("", "DETECTOR_MODEL", "the object detector (a LiteRT file, path or `gs://` URI, "
                                  "built by `imgclassify.detector_build`) for the classes ImageNet lacks (people, "
                                  "horses)", shown="none (those classes are the classifier's alone)")
    callback_allow_private: bool = setting(False, "CALLBACK_ALLOW_PRIVATE", "`true`: callbacks may go to private "
                                           "addresses (10/8, 192.168/16, fc00::/7…); link-local and metadata "
                                           "addresses are refused whatever is set")
    callback_allow_loopback: bool = setting(False, "CALLBACK_ALLOW_LOOPBACK", "`true`: callbacks may go to this "
                                            "machine (a local user's own webhook)",
                                            shown="false (`imgclassify` and `emulate`: true)")
    allowed_hosts: tuple[str, ...] = setting((), "ALLOWED_HOSTS", "comma-separated Host names answered besides "
                                             "loopback (`421` otherwise); `serve --allowed-host` and emulate's "
                                             "gateway always check, with the loopback names",
                                             shown="empty (any Host)")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        # An empty text variable is a value (JOB_EVENTS_TOPIC="" publishes no events); an empty number is unset.
        values = {f.name: _read(f, env) for f in dataclasses.fields(cls) if f.metadata.get("env")
                  and f.metadata["env"] in env and (env[f.metadata["env"]] != "" or f.type == "str")}
        if "project" not in values and env.get("GCP_PROJECT"):
            values["project"] = env["GCP_PROJECT"]
        settings = cls(**values)
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
                           max_classes=self.max_classes, callbacks=self.callback_policy, match=self.default_match)


def variable(name: str) -> str:
    """The environment variable of a setting."""
    return str(next(f for f in dataclasses.fields(Settings) if f.name == name).metadata["env"])


def default(name: str) -> Any:
    """A setting's default."""
    return next(f for f in dataclasses.fields(Settings) if f.name == name).default


def _read(setting_field: dataclasses.Field[Any], env: Mapping[str, str]) -> Any:
    """A variable as its setting's type, or a ConfigurationError naming the variable."""
    name, raw = setting_field.metadata["env"], env[setting_field.metadata["env"]]
    kind = setting_field.type
    readers: dict[str, Callable[[], Any]] = {
        "bool": lambda: env_flag(env, name), "int": lambda: int(raw), "float | None": lambda: float(raw),
        "tuple[str, ...]": lambda: env_names(env, name)}
    enums: dict[str, type[StrEnum]] = {"Backend": Backend, "Model": Model, "Runtime": Runtime,
                                       "MatchMode": MatchMode}
    try:
        if kind in enums:
            return parse(enums[str(kind)], raw, name)
        return readers[str(kind)]() if kind in readers else raw
    except ValueError as exc:
        raise ConfigurationError(f"{name}: {exc}" if kind in enums else f"{name} must be {_noun(str(kind))}, "
                                 f"got {raw!r}") from None


def _noun(kind: str) -> str:
    return {"int": "an integer", "float | None": "a number"}.get(kind, "a value")


def table() -> str:
    """docs/architecture.md's table of environment variables."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Settings):
        if f.metadata.get("env"):
            shown = f.metadata["shown"] or _shown(f.default)
            rows.append(f"| `{f.metadata['env']}` | {shown} | {f.metadata['doc']} |")
    return "\n".join(rows)


def _shown(default: object) -> str:
    if isinstance(default, bool):
        return str(default).lower()
    if default in ("", (), None):
        return "empty"
    return f"`{default}`"


def defaults() -> str:
    """Each variable's default as a shell assignment (deploy.sh reads its defaults from here)."""
    return "\n".join(f"DEFAULT_{f.metadata['env']}={_shell(f.default)}" for f in dataclasses.fields(Settings)
                     if f.metadata.get("env") and f.name != "service_key")


def _shell(value: object) -> str:
    text = ",".join(value) if isinstance(value, tuple) else "" if value is None else str(value).lower() \
        if isinstance(value, bool) else str(value)
    return "'" + text.replace("'", "'\\''") + "'"


if __name__ == "__main__":
    print({"table": table, "defaults": defaults}[sys.argv[1] if len(sys.argv) > 1 else "table"]())
