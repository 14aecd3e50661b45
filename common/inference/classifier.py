"""What a classifier is, how its input is prepared, and where its weights come from.

Weights come from a local path, a gs:// URI (fetched once into a cache directory), "imagenet" (Keras downloads
them; needs internet) or "none" (random weights: real cost, meaningless answers, for benchmarks only).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import ports
from common.domain.errors import ConfigurationError
from common.domain.options import Model, Runtime

NUM_CLASSES = 1000
# Part of every stored prediction's key: bump it when decoding or preprocessing changes what the model sees.
PREPROCESSING_VERSION = 2  # 2: reduced before orientation and colour conversion (the decode memory budget)
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def tensorflow_missing(why: str) -> ConfigurationError:
    """The one-line error of a slim install (`pip install .`: LiteRT, no TensorFlow) asked for what needs it."""
    return ConfigurationError(f"{why} needs TensorFlow, which this install leaves out: pip install "
                              "'imgclassify[keras]' (./setup.sh installs everything), or pass --weights FILE.tflite")


NO_WEIGHTS_HELP = ("no model weights available: pass --weights PATH (a Keras .weights.h5/.h5 or a .tflite file) "
                   "or set MODEL_WEIGHTS to a path or gs:// URI; 'imagenet' lets Keras download them on first use, "
                   "which needs internet access")


Classifier = ports.Classifier  # what every runtime's model is (the protocol lives with the other ports)


def preprocess(model: Model, pixels: np.ndarray) -> np.ndarray:
    """The Keras applications' preprocess_input for each model, in NumPy (so LiteRT needs no TensorFlow)."""
    x = pixels.astype(np.float32)
    if model == Model.MOBILENET_V2:
        return x / 127.5 - 1.0
    return x[..., ::-1] - _CAFFE_MEAN_BGR  # resnet50: RGB->BGR, ImageNet mean subtracted ("caffe" mode)


@dataclass(frozen=True)
class ModelConfig:
    model: Model = Model.RESNET50
    weights: str = ""
    runtime: Runtime = Runtime.KERAS
    cache_dir: str = "/tmp/imgclassify-weights"

    @property
    def effective_runtime(self) -> Runtime:
        return Runtime.LITERT if self.weights.endswith(".tflite") else self.runtime


def resolve_weights(weights: str, cache_dir: str,
                    fetch_gcs: Callable[[str, Path], None] | None = None) -> str:
    """Return a local path (or the keywords 'imagenet'/'none'), fetching gs:// URIs once."""
    if weights in ("imagenet", "none"):
        return weights
    if not weights:
        raise ConfigurationError(NO_WEIGHTS_HELP)
    if weights.startswith("gs://"):
        target = Path(cache_dir) / weights.removeprefix("gs://").replace("/", "__")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            (fetch_gcs or _fetch_from_gcs)(weights, target)
        return str(target)
    if not os.path.isfile(weights):
        raise ConfigurationError(f"weights file not found: {weights}. {NO_WEIGHTS_HELP}")
    return weights


def _fetch_from_gcs(uri: str, target: Path) -> None:
    from google.cloud import storage  # only deployed instances need it

    bucket, _, name = uri.removeprefix("gs://").partition("/")
    partial = target.with_suffix(target.suffix + ".partial")
    storage.Client().bucket(bucket).blob(name).download_to_filename(str(partial))
    partial.rename(target)  # atomic: a concurrent instance never reads half a file


_file_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: str) -> str:
    status = os.stat(path)
    key = (path, status.st_size, status.st_mtime_ns)  # size and mtime: a shortcut to skip rehashing
    if key not in _file_digests:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _file_digests[key] = digest.hexdigest()
    return _file_digests[key]


def model_fingerprint(config: ModelConfig) -> str | None:
    """Which build made a prediction: model, runtime, the weights' content, preprocessing. None when predictions
    must not be stored: random weights ("none") differ on every load. Needs no model loaded."""
    weights = config.weights
    if weights == "none" or not weights:
        return None
    if weights == "imagenet":
        content = "keras-imagenet"
    elif weights.startswith("gs://"):
        content = weights  # deploy.sh names uploaded weights by their content hash
    else:
        try:
            content = file_digest(weights)[:24]
        except OSError:
            return None
    return f"{config.model}/{config.effective_runtime}/{os.path.basename(weights)}/{content}/p{PREPROCESSING_VERSION}"
