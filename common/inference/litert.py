"""The LiteRT runtime: a .tflite build run without TensorFlow."""
from __future__ import annotations

import os
import queue
from typing import Any

import numpy as np

from common.domain.errors import ConfigurationError
from common.domain.options import Model
from common.inference.classifier import NUM_CLASSES, preprocess
from common.inference.native import litert_chatter_filtered


FEATURES = {1280: Model.MOBILENET_V2, 2048: Model.RESNET50}  # a build made here: its penultimate features' width


def model_of(interpreter: Any) -> Model | None:
    """Which model a .tflite is: from its features output (builds made here), else from its tensors' names
    (Google's own exports say MobileNetV2 / resnet); None when it does not say."""
    for output in interpreter.get_output_details():
        if len(output["shape"]) == 2 and int(output["shape"][-1]) in FEATURES:
            return FEATURES[int(output["shape"][-1])]
    names = " ".join(tensor["name"] for tensor in interpreter.get_tensor_details()).casefold()
    found = {model for word, model in (("mobilenet", Model.MOBILENET_V2), ("resnet", Model.RESNET50))
             if word in names}
    return found.pop() if len(found) == 1 else None


class LiteRTClassifier:
    """A pool of interpreters. An Interpreter is not thread-safe, and on 2 vCPUs two 1-thread interpreters serving
    two deliveries at once beat one 2-thread interpreter (bench/classify.py: 70.4 vs 55.0 img/s, ResNet50 int8,
    medians of 3 trials)."""

    def __init__(self, model: Model, path: str, threads: int = 1, interpreters: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.model = Model(model)
        count = interpreters or max(1, (os.cpu_count() or 1) // threads)
        self._pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with litert_chatter_filtered():
            for _ in range(count):
                try:
                    interpreter = Interpreter(model_path=path, num_threads=threads)
                    interpreter.allocate_tensors()
                except (ValueError, RuntimeError) as exc:  # not a .tflite model, or one LiteRT cannot run
                    raise ConfigurationError(f"cannot load {path} with LiteRT: {exc}") from None
                self._pool.put(interpreter)
        probe = self._pool.get()
        self._input = probe.get_input_details()[0]
        details = probe.get_output_details()
        self._pool.put(probe)
        # A build made here has a second output, the penultimate features; a file from elsewhere may not.
        self._output = next((d for d in details if int(d["shape"][-1]) in (NUM_CLASSES, NUM_CLASSES + 1)),
                            details[0])
        self._features = next((d for d in details if d is not self._output and len(d["shape"]) == 2), None)
        named = model_of(probe)
        if named is not None and named != self.model:  # each model has its own preprocessing: say so, once
            raise ConfigurationError(f"{os.path.basename(path)} is a {named} model, not {self.model}: pass --model "
                                     f"{named} (or leave --model out)")
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

    @staticmethod
    def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
        if detail["dtype"] == np.float32:
            return y
        scale, zero = detail["quantization"]
        return (y.astype(np.float32) - zero) * scale

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return self.predict_with_features(pixels)[0]

    def predict_with_features(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        x = self._quantize(preprocess(self.model, pixels))
        interpreter = self._pool.get()
        try:
            rows, features = [], []
            for image in x:
                interpreter.set_tensor(self._input["index"], image[None])
                interpreter.invoke()
                rows.append(self._dequantize(interpreter.get_tensor(self._output["index"])[0], self._output))
                if self._features is not None:
                    features.append(self._dequantize(interpreter.get_tensor(self._features["index"])[0],
                                                     self._features))
        finally:
            self._pool.put(interpreter)
        probs = np.stack(rows)[:, self._offset:]
        total = probs.sum(axis=1, keepdims=True)
        return ((probs / np.where(total > 0, total, 1.0)).astype(np.float32),
                np.stack(features).astype(np.float32) if features else None)


