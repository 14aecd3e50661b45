"""The Keras (TensorFlow) runtime: the reference every other build is checked against."""
from __future__ import annotations

import os

import numpy as np

from common.domain.errors import ConfigurationError
from common.domain.options import Model
from common.inference.classifier import NO_WEIGHTS_HELP, preprocess, tensorflow_missing


class KerasClassifier:
    def __init__(self, model: Model, weights: str) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import keras
            import tensorflow as tf
        except ModuleNotFoundError:
            raise tensorflow_missing(f"Keras weights ({os.path.basename(weights)}: to run them, or to build a "
                                     "LiteRT model from them once)") from None

        builders = {Model.RESNET50: keras.applications.ResNet50, Model.MOBILENET_V2: keras.applications.MobileNetV2}
        keras_weights = None if weights == "none" else weights
        try:
            self.net = builders[model](weights=keras_weights, classifier_activation="softmax")
        except Exception as exc:  # Keras raises bare Exceptions for failed downloads and mismatched files
            raise ConfigurationError(f"cannot load {model} weights {weights!r}: {exc}. {NO_WEIGHTS_HELP}") from None
        self.model = Model(model)
        # Probabilities and the penultimate features (the pooled layer before the classifier), in one pass.
        self.with_features = keras.Model(self.net.input, [self.net.output, self.net.layers[-2].output])
        # One trace for every batch size: no retracing in the hot loop.
        self._call = tf.function(lambda x: self.with_features(x, training=False), reduce_retracing=True,
                                 input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)])
        self.description = f"keras:{model}:{os.path.basename(weights)}"

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return self.predict_with_features(pixels)[0]

    def predict_with_features(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities, features = self._call(preprocess(self.model, pixels))
        return np.asarray(probabilities, dtype=np.float32), np.asarray(features, dtype=np.float32)


