"""In-memory stand-ins for the ports and the model, for fast unit tests. They obey the same contract tests as the
real adapters (tests/test_contract.py), so a test that passes here means something."""
from __future__ import annotations

import dataclasses
import io
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime

import numpy as np
from PIL import Image

from common.config import Settings
from common.domain.errors import ObjectMissing, PermanentImageError
from common.domain.jobs import JobRecord, collision_names
from common.domain.results import Counters, ImageResult
from common.domain.messages import ClassifyMessage
from common.domain.predictions import content_fingerprint
from common.ports import Copied, Listed, Removal
from common.bootstrap import Application, Inference, Ports, handlers
from common.routes import Action

# Solid-colour test images stand for ImageNet classes: the fake model "sees" the dominant colour.
COLOUR_LABELS = {"red": 281, "green": 207, "blue": 88}  # tabby, golden retriever, macaw
_RGB = {"red": (220, 20, 20), "green": (20, 220, 20), "blue": (20, 20, 220)}


def solid_jpeg(colour: str, size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, _RGB[colour]).save(buffer, format="JPEG")
    return buffer.getvalue()


class FakeClassifier:
    description = "fake"

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        with self._lock:
            self.calls += len(pixels)
        out = np.full((len(pixels), 1000), 0.1 / 999, dtype=np.float32)
        for row, image in enumerate(pixels):
            channel = int(np.argmax(image.reshape(-1, 3).mean(axis=0)))
            out[row, list(COLOUR_LABELS.values())[channel]] = 0.9
        return out

    def predict_with_features(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features: the mean colour and its square (photos of one colour are near each other)."""
        mean = pixels.reshape(len(pixels), -1, 3).mean(axis=1).astype(np.float32) / 255.0
        return self.predict(pixels), np.concatenate([mean, mean ** 2], axis=1)


class MemoryObjectStore:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.copies = 0
        self.max_bytes = 64 * 1024 * 1024
        self.generations: dict[tuple[str, str], int] = {}  # as a bucket's: every write a new one
        self._generation = 0

    def _written(self, bucket: str, name: str, data: bytes) -> str:
        self.objects[(bucket, name)] = data
        self._generation += 1
        self.generations[(bucket, name)] = self._generation
        return str(self._generation)

    def list_names(self, bucket: str, prefix: str) -> Iterator[str]:
        yield from sorted(n for b, n in self.objects if b == bucket and n.startswith(prefix))

    def list_objects(self, bucket: str, prefix: str) -> Iterator[Listed]:
        yield from (Listed(name) for name in self.list_names(bucket, prefix))

    def remove(self, bucket: str, name: str, content: str, identity: str = "") -> Removal:
        data = self.objects.get((bucket, name))
        if data is None:
            return Removal.MISSING
        if content_fingerprint(data) != content or \
                (identity and str(self.generations.get((bucket, name), "")) != identity):
            return Removal.CHANGED
        del self.objects[(bucket, name)]
        self.generations.pop((bucket, name), None)
        return Removal.REMOVED

    def read(self, bucket: str, name: str) -> bytes:
        try:
            data = self.objects[(bucket, name)]
        except KeyError:
            raise ObjectMissing(name) from None
        if len(data) > self.max_bytes:
            raise PermanentImageError(f"object is larger than the {self.max_bytes}-byte limit for an image")
        return data

    def exists(self, bucket: str, name: str) -> bool:
        return (bucket, name) in self.objects

    def copy(self, bucket: str, source: str, target: str, content: str | None = None) -> Copied:
        data = self.read(bucket, source)
        for candidate in collision_names(target):
            existing = self.objects.get((bucket, candidate))
            if existing == data:
                return Copied(candidate, written=False)
            if existing is None:
                self.copies += 1
                return Copied(candidate, written=True, identity=self._written(bucket, candidate, data))
        raise PermanentImageError(f"too many files named like {target}")

    def write(self, bucket: str, name: str, data: bytes) -> None:
        self._written(bucket, name, data)


class MemoryJobStore:
    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.results_by_job: dict[str, dict[str, ImageResult]] = {}
        self.arrivals: dict[str, set[str]] = {}
        self.completed: set[str] = set()
        self.undone: dict[str, str] = {}
        self.recorded_at: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def create_job(self, job: JobRecord) -> bool:
        with self._lock:
            if job.id in self.jobs:
                return False
            self.jobs[job.id] = job
            return True

    def set_total(self, job_id: str, number_of_files: int) -> None:
        self.jobs[job_id] = dataclasses.replace(self.jobs[job_id], number_of_files=number_of_files, error=None)

    def mark_failed(self, job_id: str, reason: str) -> None:
        self.jobs[job_id] = dataclasses.replace(self.jobs[job_id], error=reason)

    def claim_republish(self, job_id: str, at: str, since: str) -> bool:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or (job.republished_at is not None and job.republished_at > since):
                return False
            self.jobs[job_id] = dataclasses.replace(job, republished_at=at)
            return True

    def register_arrival(self, job_id: str, name: str) -> bool:
        with self._lock:
            arrived = self.arrivals.setdefault(job_id, set())
            if name in arrived:
                return False
            arrived.add(name)
            return True

    def close_job(self, job_id: str) -> None:
        self.jobs[job_id] = dataclasses.replace(self.jobs[job_id], closed=True)

    def watch_jobs(self, bucket: str) -> list[JobRecord]:
        return [j for j in self.jobs.values() if j.spec.watch and not j.closed and j.spec.bucket == bucket]

    def done_count(self, job_id: str) -> int:
        return len(self.results_by_job.get(job_id, {}))

    def claim_completion(self, job_id: str) -> bool:
        with self._lock:
            if job_id in self.completed:
                return False
            self.completed.add(job_id)
            return True

    def record_callback(self, job_id: str, outcome: dict) -> None:
        self.jobs[job_id] = dataclasses.replace(self.jobs[job_id], callback=dict(outcome))

    def on_counted(self, announce) -> bool:
        return False

    def record_job_error(self, job_id: str, message: str) -> None:
        with self._lock:
            job = self.jobs[job_id]
            if message not in job.errors:
                self.jobs[job_id] = dataclasses.replace(job, errors=job.errors + (message,))

    def get_job(self, job_id: str) -> JobRecord | None:
        return self.jobs.get(job_id)

    def record_result(self, job_id: str, result: ImageResult) -> bool:
        with self._lock:
            results = self.results_by_job.setdefault(job_id, {})
            if result.name in results:
                return False
            results[result.name] = result
            self.recorded_at[(job_id, result.name)] = datetime.now(UTC).isoformat(timespec="milliseconds")
            return True

    def claim_copy(self, job_id: str, name: str, copy: str, written: bool, identity: str = "") -> bool:
        with self._lock:
            results = self.results_by_job.get(job_id, {})
            if name not in results or job_id in self.undone:
                return False
            results[name] = results[name].claimed(copy, written, identity)
            return True

    def release_copy(self, job_id: str, name: str, copy: str) -> bool:
        with self._lock:
            results = self.results_by_job.get(job_id, {})
            if name not in results:
                return False
            owned = copy in results[name].written
            results[name] = results[name].released(copy)
            return owned

    def undone_at(self, job_id: str) -> str | None:
        return self.undone.get(job_id)

    def counters(self, job_id: str) -> Counters:
        total = Counters()
        for result in self.results_by_job.get(job_id, {}).values():
            total.add(Counters.of(result))
        total.arrived = len(self.arrivals.get(job_id, ()))
        total.last_result_at = max((t for (j, _), t in self.recorded_at.items() if j == job_id), default=None)
        return total

    def results(self, job_id: str) -> Iterator[ImageResult]:
        yield from self.results_by_job.get(job_id, {}).values()

    def result(self, job_id: str, name: str) -> ImageResult | None:
        return self.results_by_job.get(job_id, {}).get(name)

    def forget_retryable_failures(self, job_id: str, names=None) -> list[str]:
        with self._lock:
            results = self.results_by_job.get(job_id, {})
            names = [name for name, result in results.items() if not result.ok and result.retryable
                     and (names is None or name in names)]
            for name in names:
                del results[name]
            return names

    def record_undo(self, job_id: str, at: str) -> bool:
        with self._lock:
            if job_id in self.undone:
                return False
            self.undone[job_id] = at
            return True

    def undone_jobs(self) -> dict[str, str]:
        return dict(self.undone)

    def job_ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        return sorted(i for i in self.jobs if i.startswith(prefix))[:limit]

    def job_ids(self) -> list[str]:
        return [job.id for job in sorted(self.jobs.values(), key=lambda j: j.created_at)]

    def recent_job_ids(self, limit: int) -> list[str]:
        return list(reversed(self.job_ids()))[:limit]

    def latest_job_id(self) -> str | None:
        return max(self.jobs.values(), key=lambda j: j.created_at).id if self.jobs else None


class MemoryPredictionStore:
    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], bytes] = {}

    def get(self, model: str, content: str) -> bytes | None:
        return self.entries.get((model, content))

    def get_many(self, model: str, contents: Sequence[str]) -> dict[str, bytes]:
        return {c: self.entries[(model, c)] for c in contents if (model, c) in self.entries}

    def put(self, model: str, content: str, prediction: bytes) -> None:
        self.entries[(model, content)] = prediction


class MemoryCorrections:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], bool] = {}

    def record_correction(self, bucket: str, word: str, content: str, belongs: bool) -> None:
        self.rows[(bucket, word, content)] = bool(belongs)

    def corrections(self, bucket: str, word: str) -> dict[str, bool]:
        return dict(sorted((c, b) for (bk, w, c), b in self.rows.items() if (bk, w) == (bucket, word)))

    def forget_correction(self, bucket: str, word: str, content: str) -> bool:
        return self.rows.pop((bucket, word, content), None) is not None

    def corrected_words(self, bucket: str) -> list[str]:
        return sorted({w for (bk, w, _) in self.rows if bk == bucket})


class ListEvents:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def publish_event(self, event: dict) -> None:
        self.events.append(event)


class RecordingCallbacks:
    """Answers each POST with the next status in `statuses` (the last repeats), recording what it was sent."""

    def __init__(self, *statuses: int | Exception) -> None:
        self.statuses = list(statuses) or [200]
        self.posts: list[tuple[str, bytes, dict[str, str]]] = []

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        self.posts.append((url, body, dict(headers)))
        answer = self.statuses[min(len(self.posts), len(self.statuses)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


class ListPublisher:
    def __init__(self) -> None:
        self.messages: list[ClassifyMessage] = []

    def publish_all(self, messages: Iterable[ClassifyMessage]) -> int:
        batch = list(messages)
        self.messages.extend(batch)
        return len(batch)


def memory_ports(objects: MemoryObjectStore | None = None, publisher: ListPublisher | None = None,
                 **replaced: object) -> Ports:
    """The in-memory fakes as an application's ports, built as `cloud_ports` builds the cloud's: a fake model, a
    recording callback receiver, background work run inline; any field replaced by keyword."""
    from common.inference.decoding import decode_image

    jobs, classifier = MemoryJobStore(), FakeClassifier()
    ports = Ports(objects=objects or MemoryObjectStore(), jobs=jobs, publisher=publisher or ListPublisher(),
                  predictions=MemoryPredictionStore(), corrections=MemoryCorrections(),
                  callbacks=RecordingCallbacks(200), background=InlineWork(),
                  inference=Inference(classifier=lambda: classifier, model_key="fake-model", decode=decode_image,
                                      detector=None, detector_key=None),
                  retries=jobs)
    return dataclasses.replace(ports, **replaced)  # type: ignore[arg-type]


class FakeApp(Application):
    """Every use case over the in-memory fakes, built by the composition root, with the fakes at hand for the test
    to inspect."""

    @property
    def classifier(self) -> FakeClassifier:
        return self.ports.inference.classifier()  # type: ignore[return-value]

    @property
    def objects(self) -> MemoryObjectStore:
        return self.ports.objects  # type: ignore[return-value]

    @property
    def jobs(self) -> MemoryJobStore:
        return self.ports.jobs  # type: ignore[return-value]

    @property
    def publisher(self) -> ListPublisher:
        return self.ports.publisher  # type: ignore[return-value]

    @property
    def predictions(self) -> MemoryPredictionStore:
        return self.ports.predictions  # type: ignore[return-value]


def fake_app(settings: Settings | None = None, objects: MemoryObjectStore | None = None,
             publisher: ListPublisher | None = None, **replaced: object) -> FakeApp:
    return FakeApp(settings or Settings(bucket="images"), memory_ports(objects, publisher, **replaced))


SERVED = (Action.CREATE, Action.STATUS, Action.UNDO, Action.CLOSE, Action.REPORT, Action.THUMBNAIL, Action.CORRECT,
          Action.RETRY)


def served(app: Application):  # type: ignore[no-untyped-def]
    """`imgclassify serve`'s HTTP app over an application (a Flask test client)."""
    from common.http import create_app

    return create_app(handlers(*SERVED, application=lambda: app), app.settings).test_client()


class InlineWork:
    """Background work run at once, in the caller: tests read its outcome without waiting on a thread."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, task) -> bool:
        self.submitted += 1
        task()
        return True

    def drain(self, timeout: float) -> bool:
        return True
