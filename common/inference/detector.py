"""The object detector (NanoDet, COCO's 80 classes) run with LiteRT: what is in a photo beside what it is of.

Its answer per photo is each COCO class's best score anywhere in the photo, and that detection's box (x0, y0,
x1, y1 as fractions of the photo): 80 × 5 floats, stored like the classifier's probabilities. Preprocessing is
NanoDet's own (RangiLyu/nanodet: BGR, mean/std normalised, 416×416, channels first); boxes are decoded from its
distribution heads (General Focal Loss: 4 sides × 11 bins, expectation × stride). The same network built for a
smaller input (imgclassify/detector_build.py --size) runs here too, at its own size.
"""
from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from common.domain.detections import DETECTION_WIDTH, MEAN_BGR, NUM_DETECTOR_CLASSES, STD_BGR
from common.domain.errors import ConfigurationError
from common.inference.native import litert_chatter_filtered

INPUT_SIZE = 416
STRIDES = (8, 16, 32)
BINS = 11


def _centres(stride: int, size: int) -> np.ndarray:
    cells = size // stride
    ys, xs = np.mgrid[0:cells, 0:cells]
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) * stride


def decode(outputs: list[np.ndarray], size: int = INPUT_SIZE) -> np.ndarray:
    """Per stride (scores (N, 80), box bins (N, 44)) -> (80, 5): best score per class and its box."""
    best = np.zeros((NUM_DETECTOR_CLASSES, DETECTION_WIDTH), dtype=np.float32)
    scores_by_cells = {o.shape[0]: o for o in outputs if o.shape[1] == NUM_DETECTOR_CLASSES}
    bins_by_cells = {o.shape[0]: o for o in outputs if o.shape[1] == 4 * BINS}
    for stride in STRIDES:
        cells = (size // stride) ** 2
        scores, bins = scores_by_cells[cells], bins_by_cells[cells]
        where = scores.argmax(axis=0)  # the best position of each class at this stride
        top = scores[where, np.arange(NUM_DETECTOR_CLASSES)]
        better = top > best[:, 0]
        if not better.any():
            continue
        logits = bins[where].reshape(NUM_DETECTOR_CLASSES, 4, BINS)
        weights = np.exp(logits - logits.max(axis=2, keepdims=True))
        distances = (weights / weights.sum(axis=2, keepdims=True) * np.arange(BINS)).sum(axis=2) * stride
        centre = _centres(stride, size)[where]
        boxes = np.concatenate([centre - distances[:, :2], centre + distances[:, 2:]], axis=1) / size
        best[better, 0] = top[better]
        best[better, 1:] = np.clip(boxes[better], 0.0, 1.0)
    return best


Pass = tuple[int, Callable[[np.ndarray], list[np.ndarray]]]  # (input size, run: uint8 (1, S, S, 3) -> outputs)


class LiteRTDetector:
    """A pool of interpreters (one is not thread-safe), like the classifier's. A cascade build (one file, one
    signature per input size: imgclassify/detector_build.py) runs one pass, chosen by the pixels' size; the use case
    (common/usecases/photo_vectors.py: detected) runs its smallest size first and the full size only where the
    small pass leaves a decision unsure (common/domain/people.py: escalate)."""

    def __init__(self, path: str, threads: int = 1, interpreters: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        count = interpreters or max(1, (os.cpu_count() or 1) // threads)
        self._pool: queue.SimpleQueue[list[Pass]] = queue.SimpleQueue()
        with litert_chatter_filtered():
            for _ in range(count):
                try:
                    interpreter = self._interpreter(Interpreter, OpResolverType, path, threads)
                    self._pool.put(self._passes(interpreter, path))
                except (ValueError, RuntimeError) as exc:
                    raise ConfigurationError(f"cannot load the detector {path} with LiteRT: {exc}") from None
        probe = self._pool.get()
        self.sizes = tuple(size for size, _ in probe)
        self._pool.put(probe)
        self.size = self.sizes[-1]
        self.description = f"litert:nanodet:{os.path.basename(path)}"
        self._counted = threading.Lock()
        self.passes: dict[int, int] = dict.fromkeys(self.sizes, 0)  # how often each size ran (benchmarks read it)

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

    @staticmethod
    def _passes(interpreter: Any, path: str) -> list[Pass]:
        """The interpreter's passes, smallest input first: one per `size<N>` signature, or the one graph."""
        signatures = sorted((int(name[4:]), name) for name in interpreter.get_signature_list()
                            if name.startswith("size") and name[4:].isdigit())
        if signatures:
            runners = [(size, interpreter.get_signature_runner(name)) for size, name in signatures]
            return [(size, lambda x, run=run: list(run(pixels=x).values()))  # type: ignore[misc]
                    for size, run in runners]  # their builds take uint8 RGB and preprocess in the graph
        details = interpreter.get_input_details()[0]
        shape = [int(v) for v in details["shape"]]
        size = shape[2] if details["dtype"] == np.float32 else shape[1]
        if len(shape) != 4 or size % STRIDES[-1] or shape != ([1, 3, size, size] if details["dtype"] == np.float32
                                                           else [1, size, size, 3]):
            raise ConfigurationError(f"{path} is not a NanoDet detector (input {shape}: 1×3×S×S expected)")
        index, outputs = details["index"], interpreter.get_output_details()

        def run(x: np.ndarray) -> list[np.ndarray]:
            interpreter.set_tensor(index, x if details["dtype"] == np.uint8 else preprocessed(x[0]))
            interpreter.invoke()
            return [interpreter.get_tensor(d["index"]) for d in outputs]
        return [(size, run)]

    def detect(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (S, S, 3) RGB -> float32 (80, 5): per COCO class, its best score and box. One pass: the smallest
        built for at least the pixels' size (a cascade's 256 pass takes the classifier's 224 pixels), else the
        largest, on the pixels scaled to it."""
        passes = self._pool.get()
        try:
            size, run = next(((s, r) for s, r in passes if s >= max(pixels.shape[:2])), passes[-1])
            answer = decode([o[0] for o in run(np.ascontiguousarray(scaled(pixels, size))[None])], size)
        finally:
            self._pool.put(passes)
        with self._counted:
            self.passes[size] += 1
        return answer


def preprocessed(pixels: np.ndarray) -> np.ndarray:
    """NanoDet's preprocessing for a build without it in the graph (older builds): BGR, mean/std, channels first."""
    return np.ascontiguousarray(((pixels[:, :, ::-1].astype(np.float32) - MEAN_BGR) / STD_BGR).transpose(2, 0, 1)[None])


def scaled(pixels: np.ndarray, size: int) -> np.ndarray:
    if pixels.shape[0] == size and pixels.shape[1] == size:
        return pixels
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))
