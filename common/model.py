"""The cached ImageNet classifier: one per process, loaded on first use, reused for every image.

Two runtimes: Keras (TensorFlow; the reference) and LiteRT (a .tflite file; no TensorFlow import).
Weights come from a local path, a gs:// URI (fetched once into a cache directory), "imagenet" (Keras downloads them;
needs internet) or "none" (random weights: real cost, meaningless answers, for benchmarks only).
"""
from __future__ import annotations

import os
import queue
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from common.config import MODELS
from common.errors import ConfigurationError
from common.logs import get_logger

log = get_logger("model")

NUM_CLASSES = 1000
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)

NO_WEIGHTS_HELP = ("no model weights available: pass --weights PATH (a Keras .weights.h5/.h5 or a .tflite file) "
                   "or set MODEL_WEIGHTS to a path or gs:// URI; 'imagenet' lets Keras download them on first use, "
                   "which needs internet access")


class Classifier(Protocol):
    description: str

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, 224, 224, 3) RGB -> float32 (N, 1000) ImageNet probabilities."""
        ...


def preprocess(model: str, pixels: np.ndarray) -> np.ndarray:
    """The Keras applications' preprocess_input for each model, in NumPy (so LiteRT needs no TensorFlow)."""
    x = pixels.astype(np.float32)
    if model == "mobilenet_v2":
        return x / 127.5 - 1.0
    return x[..., ::-1] - _CAFFE_MEAN_BGR  # resnet50: RGB->BGR, ImageNet mean subtracted ("caffe" mode)


@dataclass(frozen=True)
class ModelConfig:
    model: str = "resnet50"
    weights: str = ""
    runtime: str = "keras"
    cache_dir: str = "/tmp/imgclassify-weights"

    @property
    def effective_runtime(self) -> str:
        return "litert" if self.weights.endswith(".tflite") else self.runtime


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


class KerasClassifier:
    def __init__(self, model: str, weights: str) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras
        import tensorflow as tf

        builders = {"resnet50": keras.applications.ResNet50, "mobilenet_v2": keras.applications.MobileNetV2}
        keras_weights = None if weights == "none" else weights
        try:
            self.net = builders[model](weights=keras_weights, classifier_activation="softmax")
        except Exception as exc:  # Keras raises bare Exceptions for failed downloads and mismatched files
            raise ConfigurationError(f"cannot load {model} weights {weights!r}: {exc}. {NO_WEIGHTS_HELP}") from None
        self.model = model
        # One trace for every batch size: no retracing in the hot loop.
        self._call = tf.function(lambda x: self.net(x, training=False), reduce_retracing=True,
                                 input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)])
        self.description = f"keras:{model}:{os.path.basename(weights)}"

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return np.asarray(self._call(preprocess(self.model, pixels)), dtype=np.float32)


class LiteRTClassifier:
    """A pool of interpreters. An Interpreter is not thread-safe, and on 2 vCPUs two 1-thread interpreters serving
    two deliveries at once beat one 2-thread interpreter (bench/classify.py: 70.4 vs 55.0 img/s, ResNet50 int8,
    medians of 3 trials)."""

    def __init__(self, model: str, path: str, threads: int = 1, interpreters: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.model = model
        count = interpreters or max(1, (os.cpu_count() or 1) // threads)
        self._pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(count):
            interpreter = Interpreter(model_path=path, num_threads=threads)
            interpreter.allocate_tensors()
            self._pool.put(interpreter)
        probe = self._pool.get()
        self._input = probe.get_input_details()[0]
        self._output = probe.get_output_details()[0]
        self._pool.put(probe)
        outputs = int(self._output["shape"][-1])
        if outputs not in (NUM_CLASSES, NUM_CLASSES + 1):
            raise ConfigurationError(f"{path} has {outputs} outputs; expected 1000 ImageNet classes (or 1001)")
        self._offset = outputs - NUM_CLASSES  # 1001-output models put "background" at index 0
        self.description = f"litert:{model}:{os.path.basename(path)}"

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dtype = self._input["dtype"]
        if dtype == np.float32:
            return x
        scale, zero = self._input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        if self._output["dtype"] == np.float32:
            return y
        scale, zero = self._output["quantization"]
        return (y.astype(np.float32) - zero) * scale

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        x = self._quantize(preprocess(self.model, pixels))
        interpreter = self._pool.get()
        try:
            rows = []
            for image in x:
                interpreter.set_tensor(self._input["index"], image[None])
                interpreter.invoke()
                rows.append(self._dequantize(interpreter.get_tensor(self._output["index"])[0]))
        finally:
            self._pool.put(interpreter)
        probs = np.stack(rows)[:, self._offset:]
        total = probs.sum(axis=1, keepdims=True)
        return (probs / np.where(total > 0, total, 1.0)).astype(np.float32)


@lru_cache(maxsize=4)
def load_classifier(config: ModelConfig) -> Classifier:
    """Build (once per process and config) the classifier the config names."""
    if config.model not in MODELS:
        raise ConfigurationError(f"unknown model {config.model!r}; choose one of {', '.join(MODELS)}")
    path = resolve_weights(config.weights, config.cache_dir)
    runtime = config.effective_runtime
    if runtime == "litert":
        if not path.endswith(".tflite"):
            raise ConfigurationError(f"the litert runtime needs a .tflite file, got {path!r}")
        classifier: Classifier = LiteRTClassifier(config.model, path)
    else:
        from common.batching import BatchingClassifier

        # Keras gains from batches; concurrent deliveries on one instance share them.
        classifier = BatchingClassifier(KerasClassifier(config.model, path))
    log.info("model loaded", extra={"model": classifier.description})
    return classifier
