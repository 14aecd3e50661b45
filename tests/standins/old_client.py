"""The old client's flow (mungujn/image-classification-system main.py), as its contract reads: download, classify,
upload, each started by a POST and polled by GET every interval until `complete`; the only fields it reads are
`id`, `complete` and `percentage`. An upload answered with an empty list is taken as done (100 %). A start answered
without `id` (a 400's body) is the KeyError `'id'` that the old client prints before "Do you want to retry?"."""
from __future__ import annotations

import time
from typing import Any

import requests


class OldClient:
    def __init__(self, classifier: str, uploader: str, key: str, token: str, interval: float = 0.2,
                 timeout: float = 180) -> None:
        self.classifier, self.uploader, self.interval, self.timeout = classifier, uploader, interval, timeout
        self.headers = {"Token": token, "Authorization": key}
        self.printed: list[str] = []

    def _start(self, kind: str, classes: list[str]) -> dict[str, Any]:
        if kind == "download":
            return requests.post(f"{self.uploader}/download-job", headers=self.headers, timeout=30).json()
        if kind == "classification":
            return requests.post(f"{self.classifier}/classification-job", json={"classes": classes},
                                 headers=self.headers, timeout=60).json()
        jobs = requests.post(f"{self.uploader}/upload-job", json={"classes": classes}, headers=self.headers,
                             timeout=30).json()
        return {"id": None, "percentage": 100, "complete": True} if len(jobs) == 0 else jobs[-1]

    def _status(self, kind: str, job_id: object) -> dict[str, Any]:
        base = self.classifier if kind == "classification" else self.uploader
        return requests.get(f"{base}/{kind}-job/{job_id}", headers=self.headers, timeout=30).json()

    def step(self, kind: str, classes: list[str]) -> dict[str, Any]:
        job = self._start(kind, classes)
        job_id = job["id"]  # KeyError('id') on an error body: what the old client shows
        self.printed.append(f"{kind} job {job_id} has started on server")
        deadline = time.monotonic() + self.timeout
        percentage = 0
        while not job["complete"]:
            assert time.monotonic() < deadline, f"{kind} job {job_id} never completed: {job}"
            job = self._status(kind, job_id)
            if job["percentage"] > percentage:
                percentage = job["percentage"]
                self.printed.append(f"{kind} job {job_id} is {percentage} percent complete")
            time.sleep(self.interval)
        return job

    def run(self, classes: list[str]) -> dict[str, dict[str, Any]]:
        return {kind: self.step(kind, classes) for kind in ("download", "classification", "upload")}
