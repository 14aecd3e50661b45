"""Counting results on the Firestore emulator at load: writes per document per second, and what a status read costs.

Several classify instances (processes), each with its own FirestoreJobStore (the real adapter) and `--threads`
concurrent deliveries, record results for one job as fast as the emulator takes them, for `--images` results in
all. Every committed write is recorded by wrapping the Firestore client's batch and document writes (the
"wrapping adapter"): which document, when. The model is left out: this measures the counting.

  .venv/bin/python bench/counting.py --instances 4 --threads 16 --images 4000

Prints JSON: results/s, writes per result, the busiest document's writes in any one second (result documents,
the job's shard documents), and the documents a status read reads.
"""
from __future__ import annotations

import argparse
import collections
import multiprocessing
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def instance(env: dict[str, str], job_id: str, names: list[str], threads: int, out: multiprocessing.Queue) -> None:
    import os

    os.environ.update(env)
    from google.cloud import firestore
    from google.cloud.firestore_v1 import batch as batch_module

    from common.adapters.gcp import FirestoreJobStore
    from common.domain.results import ImageResult

    writes: list[tuple[float, str]] = []
    lock = threading.Lock()
    original_commit = batch_module.WriteBatch.commit  # DocumentReference.create commits a batch too

    def commit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        paths = [w.update.name if w.update.name else w.delete for w in self._write_pbs]
        result = original_commit(self, *args, **kwargs)
        now = time.monotonic()
        with lock:
            writes.extend((now, p.split("/documents/", 1)[-1]) for p in paths)
        return result

    batch_module.WriteBatch.commit = commit
    store = FirestoreJobStore(firestore.Client(project=env["GOOGLE_CLOUD_PROJECT"]), "bench-counting", 16)
    queue = list(names)
    queue_lock = threading.Lock()

    def work() -> None:
        while True:
            with queue_lock:
                if not queue:
                    return
                name = queue.pop()
            store.record_result(job_id, ImageResult(name, True, ("dog",)))

    started = time.monotonic()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put({"seconds": time.monotonic() - started, "writes": writes})


def busiest(writes: list[tuple[float, str]], kind: str) -> int:
    """The most writes any one document of this kind took within one second (sliding window)."""
    by_doc: dict[str, list[float]] = collections.defaultdict(list)
    for at, path in writes:
        if f"/{kind}/" in path:
            by_doc[path].append(at)
    most = 0
    for times in by_doc.values():
        times.sort()
        start = 0
        for end in range(len(times)):
            while times[end] - times[start] > 1.0:
                start += 1
            most = max(most, end - start + 1)
    return most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from bench.machine import describe, emit
    from imgclassify.emulation import Emulators

    with Emulators() as emulators:
        from google.cloud import firestore

        import os

        os.environ.update(emulators.env)
        from common.adapters.gcp import FirestoreJobStore
        from common.domain.jobs import JobRecord, JobSpec

        job = JobRecord("b" * 32, JobSpec(("dog",), "images"), args.images, "2026-12-02T00:00:00+00:00")
        store = FirestoreJobStore(firestore.Client(project=emulators.project), "bench-counting", 16)
        store.create_job(job)
        names = [f"all/{i:06d}.jpg" for i in range(args.images)]
        out: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=instance, args=(emulators.env, job.id, names[i::args.instances],
                                                            args.threads, out)) for i in range(args.instances)]
        started = time.monotonic()
        for process in processes:
            process.start()
        reports = [out.get(timeout=1800) for _ in processes]
        for process in processes:
            process.join()
        elapsed = time.monotonic() - started
        counters = store.counters(job.id)
        shards = list(firestore.Client(project=emulators.project).collection("bench-counting").document(
            job.id).collection("counter_shards").stream())
    writes = [w for r in reports for w in r["writes"]]
    emit({"benchmark": "counting", "machine": describe(), "instances": args.instances,
          "threads_per_instance": args.threads, "images": args.images,
          "counted": {"processed": counters.processed, "matches": counters.matches},
          "exact": counters.processed == args.images and counters.matches == {"dog": args.images},
          "results_per_second": round(args.images / elapsed, 1),
          "seconds": round(elapsed, 2), "instance_seconds": [round(r["seconds"], 2) for r in reports],
          "writes_per_result": round(len(writes) / args.images, 3),
          "busiest_shard_writes_in_one_second": busiest(writes, "counter_shards"),
          "busiest_result_writes_in_one_second": busiest(writes, "results"),
          "shard_documents_a_status_read_reads": len(shards),
          "median_shard_commits_per_instance": statistics.median(
              sum(1 for _, p in r["writes"] if "/counter_shards/" in p) for r in reports)}, args.out)


if __name__ == "__main__":
    main()
