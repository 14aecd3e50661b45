"""The object detector (NanoDet, COCO's 80 classes) run with LiteRT: what is in a photo beside what it is of.

Its answer per photo is each COCO class's best score anywhere in the photo, and that detection's box (x0, y0,
x1, y1 as fractions of the photo): 80 × 5 floats, stored like the classifier's probabilities. Preprocessing is
NanoDet's own (RangiLyu/nanodet: BGR, mean/std normalised, 416×416, channels first); boxes are decoded from its
distribution heads (General Focal Loss: 4 sides × 11 bins, expectation × stride).
"""
from __future__ import annotations

import os
import queue
from typing import Any

import numpy as np

from common.domain.detections import DETECTION_WIDTH, NUM_DETECTOR_CLASSES
from common.domain.errors import ConfigurationError
from common.inference.native import litert_chatter_filtered

INPUT_SIZE = 416
STRIDES = (8, 16, 32)
BINS = 11
MEAN_BGR = np.array([103.53, 116.28, 123.675], dtype=np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], dtype=np.float32)


def _centres(stride: int) -> np.ndarray:
    cells = INPUT_SIZE // stride
    ys, xs = np.mgrid[0:cells, 0:cells]
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) * stride


def decode(outputs: list[np.ndarray]) -> np.ndarray:
    """Per stride (scores (N, 80), box bins (N, 44)) -> (80, 5): best score per class and its box."""
    best = np.zeros((NUM_DETECTOR_CLASSES, DETECTION_WIDTH), dtype=np.float32)
    scores_by_cells = {o.shape[0]: o for o in outputs if o.shape[1] == NUM_DETECTOR_CLASSES}
    bins_by_cells = {o.shape[0]: o for o in outputs if o.shape[1] == 4 * BINS}
    for stride in STRIDES:
        cells = (INPUT_SIZE // stride) ** 2
        scores, bins = scores_by_cells[cells], bins_by_cells[cells]
        where = scores.argmax(axis=0)  # the best position of each class at this stride
        top = scores[where, np.arange(NUM_DETECTOR_CLASSES)]
        better = top > best[:, 0]
        if not better.any():
            continue
        logits = bins[where].reshape(NUM_DETECTOR_CLASSES, 4, BINS)
        weights = np.exp(logits - logits.max(axis=2, keepdims=True))
        distances = (weights / weights.sum(axis=2, keepdims=True) * np.arange(BINS)).sum(axis=2) * stride
        centre = _centres(stride)[where]
        boxes = np.concatenate([centre - distances[:, :2], centre + distances[:, 2:]], axis=1) / INPUT_SIZE
        best[better, 0] = top[better]
        best[better, 1:] = np.clip(boxes[better], 0.0, 1.0)
    return best


class LiteRTDetector:
    """A pool of interpreters (one is not thread-safe), like the classifier's."""

    def __init__(self, path: str, threads: int = 1, interpreters: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        count = interpreters or max(1, (os.cpu_count() or 1) // threads)
        self._pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with litert_chatter_filtered():
            for _ in range(count):
                try:
                    interpreter = self._interpreter(Interpreter, OpResolverType, path, threads)
                except (ValueError, RuntimeError) as exc:
                    raise ConfigurationError(f"cannot load the detector {path} with LiteRT: {exc}") from None
                self._pool.put(interpreter)
        probe = self._pool.get()
        self._input = probe.get_input_details()[0]
        self._outputs = probe.get_output_details()
        self._pool.put(probe)
        if list(self._input["shape"]) != [1, 3, INPUT_SIZE, INPUT_SIZE]:
            raise ConfigurationError(f"{path} is not the NanoDet 416×416 detector (input {self._input['shape']})")
        self.description = f"litert:nanodet:{os.path.basename(path)}"

    @staticmethod
    def _interpreter(interpreter_class: Any, resolvers: Any, path: str, threads: int) -> Any:
        """With XNNPACK where it takes the whole graph (the fp32 build); the int8 build's PadV2 it refuses, so that
        one runs on LiteRT's own int8 kernels."""
        try:
            interpreter = interpreter_class(model_path=path, num_threads=threads)
            interpreter.allocate_tensors()
        except RuntimeError:
            interpreter = interpreter_class(model_path=path, num_threads=threads,
                                            experimental_op_resolver_type=resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            interpreter.allocate_tensors()
        return interpreter

    def detect(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (416, 416, 3) RGB -> float32 (80, 5): per COCO class, its best score and box."""
        x = ((pixels[:, :, ::-1].astype(np.float32) - MEAN_BGR) / STD_BGR).transpose(2, 0, 1)[None]
        interpreter = self._pool.get()
        try:
            interpreter.set_tensor(self._input["index"], np.ascontiguousarray(x))
            interpreter.invoke()
            outputs = [interpreter.get_tensor(d["index"])[0] for d in self._outputs]
        finally:
            self._pool.put(interpreter)
        return decode(outputs)
