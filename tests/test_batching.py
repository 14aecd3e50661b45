import threading

import numpy as np

from common.inference.batching import BatchingClassifier


class RecordingClassifier:
    description = "recording"

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(pixels))
        out = np.zeros((len(pixels), 1000), dtype=np.float32)
        out[np.arange(len(pixels)), pixels[:, 0, 0, 0].astype(int)] = 1.0  # echo each image's marker
        return out

    def predict_with_features(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.predict(pixels), pixels[:, 0, 0, :1].astype(np.float32)  # the marker again


def image(marker: int) -> np.ndarray:
    pixels = np.zeros((1, 224, 224, 3), dtype=np.uint8)
    pixels[0, 0, 0, 0] = marker
    return pixels


def test_concurrent_callers_share_batches_and_each_gets_its_own_rows():
    inner = RecordingClassifier()
    batching = BatchingClassifier(inner, max_batch=8, max_wait=0.05)
    results: dict[int, int] = {}
    barrier = threading.Barrier(16)

    features: dict[int, float] = {}

    def call(marker: int) -> None:
        barrier.wait()
        probabilities, rows = batching.predict_with_features(image(marker))
        results[marker] = int(probabilities[0].argmax())
        features[marker] = float(rows[0, 0])

    threads = [threading.Thread(target=call, args=(m,)) for m in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == {m: m for m in range(16)} and features == {m: float(m) for m in range(16)}
    assert sum(inner.batch_sizes) == 16 and len(inner.batch_sizes) < 16 and max(inner.batch_sizes) <= 8


def test_a_lone_caller_waits_at_most_max_wait():
    inner = RecordingClassifier()
    batching = BatchingClassifier(inner, max_batch=8, max_wait=0.01)
    assert int(batching.predict(image(5))[0].argmax()) == 5 and inner.batch_sizes == [1]


def test_errors_reach_every_caller_in_the_batch():
    class Failing:
        description = "failing"

        def predict_with_features(self, pixels):
            raise RuntimeError("model exploded")

    batching = BatchingClassifier(Failing(), max_batch=2, max_wait=0.5)
    errors = []

    def call() -> None:
        try:
            batching.predict(image(1))
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == ["model exploded", "model exploded"]
