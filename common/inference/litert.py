"""The LiteRT runtime: a .tflite build run without TensorFlow."""
from __future__ import annotations

import os
import queue
from typing import Any

import numpy as np

from common.domain.errors import ConfigurationError
from common.domain.options import Model
from common.inference.classifier import NUM_CLASSES, preprocess


class LiteRTClassifier:
    """A pool of interpreters. An Interpreter is not thread-safe, and on 2 vCPUs two 1-thread interpreters serving
    two deliveries at once beat one 2-thread interpreter (bench/classify.py: 70.4 vs 55.0 img/s, ResNet50 int8,
    medians of 3 trials)."""

    def __init__(self, model: Model, path: str, threads: int = 1, interpreters: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.model = Model(model)
        count = interpreters or max(1, (os.cpu_count() or 1) // threads)
        self._pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(count):
            try:
                interpreter = Interpreter(model_path=path, num_threads=threads)
                interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as exc:  # not a .tflite model, or one LiteRT cannot run
                raise ConfigurationError(f"cannot load {path} with LiteRT: {exc}") from None
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


