"""Build the configured classifier once per process and keep it: every delivery an instance serves reuses it."""
from __future__ import annotations

from functools import lru_cache

from common.domain.errors import ConfigurationError
from common.domain.options import Runtime
import os

from common.inference.classifier import Classifier, ModelConfig, file_digest, resolve_weights
from common.ports import Detector
from common.logs import get_logger

log = get_logger("model")


@lru_cache(maxsize=4)
def load_classifier(config: ModelConfig) -> Classifier:
    """Build (once per process and config) the classifier the config names."""
    path = resolve_weights(config.weights, config.cache_dir)
    classifier: Classifier
    if config.effective_runtime == Runtime.LITERT:
        if not path.endswith(".tflite"):
            raise ConfigurationError(f"the litert runtime needs a .tflite file, got {path!r}")
        from common.inference.litert import LiteRTClassifier

        classifier = LiteRTClassifier(config.model, path)
    else:
        from common.inference.batching import BatchingClassifier
        from common.inference.keras import KerasClassifier

        # Keras gains from batches; concurrent deliveries on one instance share them.
        classifier = BatchingClassifier(KerasClassifier(config.model, path))
    log.info("model loaded", extra={"model": classifier.description})
    return classifier


@lru_cache(maxsize=2)
def load_detector(path: str, cache_dir: str) -> Detector:
    """Build (once per process) the object detector: a LiteRT file, local or gs://."""
    from common.inference.detector import LiteRTDetector

    detector = LiteRTDetector(resolve_weights(path, cache_dir))
    log.info("detector loaded", extra={"model": detector.description})
    return detector


def detector_fingerprint(path: str) -> str | None:
    """Which detector build made a stored detection (its file's content), None when it cannot be read here."""
    if path.startswith("gs://"):
        return f"nanodet/{path}"  # deploy.sh names uploaded artifacts by their content hash
    try:
        return f"nanodet/{os.path.basename(path)}/{file_digest(path)[:24]}/p1"
    except OSError:
        return None
