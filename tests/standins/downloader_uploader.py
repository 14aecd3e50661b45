"""A stand-in for the old downloader-uploader (mungujn/downloader-uploader), written from its contract, and a
stand-in Dropbox (a folder: `/all/x.jpg` is `DROPBOX/all/x.jpg`).

- `POST /download-job` (headers `Authorization: <SERVICE_KEY>`, `Token: <Dropbox token>`): 201 with
  `{"type": "download", "complete": false, "percentage": 0, "id": n}`; in the background copies every file of
  Dropbox `/all` into the working folder's `all/`.
- `POST /upload-job` with `{"classes": [...]}`: for each class naming a folder of the working folder *exactly*
  (the old service's `name in os.listdir(...)`), one upload job copying that folder's files to Dropbox `/<class>/`;
  201 with the list of jobs (empty when no folder matched — which the old client takes for 100 %).
- `GET /download-job/<id>`, `GET /upload-job/<id>`: 200 with `{"code": 200, **job}`; an unknown id is a 400
  `{"code": 400, "message": "Job <id> not found"}`, as the old service answered.
- A missing or wrong `Authorization` is a 401; a POST without `Token` a 401 too.
- The download writes into the working folder's `all/` and never makes it (the old service's `open(path, "w+b")`);
  without it the job ends `complete` having copied nothing, as the old service's error handler leaves it.

`downloader_uploader_app/` is this stand-in laid out as the old service's source folder (`service.py`, a Flask `app`,
its settings from the environment and its `.env`), for what starts it as a process (`emulate --uploader DIR`).

Nothing of it is the old service's code: it is what its README and client say it does.
"""
from __future__ import annotations

import itertools
import shutil
import threading
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request


class DownloaderUploader:
    def __init__(self, working: Path, dropbox: Path, key: str, token: str) -> None:
        self.working, self.dropbox, self.key, self.token = working, dropbox, key, token
        self.jobs: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(100)
        self.app = self._routes()

    def _job(self, kind: str) -> dict[str, Any]:
        job = {"type": kind, "complete": False, "percentage": 0, "id": next(self._ids)}
        self.jobs[str(job["id"])] = job
        return job

    def _refused(self, post: bool) -> Any:
        if request.headers.get("Authorization") is None:
            return jsonify({"code": 401, "message": "No service key supplied"}), 401
        if request.headers.get("Authorization") != self.key:
            return jsonify({"code": 401, "message": "Incorrect service key"}), 401
        if post and request.headers.get("Token") != self.token:
            return jsonify({"code": 401, "message": "No storage token sent"}), 401
        return None

    @staticmethod
    def _copy(files: list[Path], destination: Path, job: dict[str, Any], make_destination: bool) -> None:
        job["number_of_files"], job["processed"] = len(files), 0
        try:
            if make_destination:  # Dropbox makes a folder on upload; the working folder's all/ must exist already
                destination.mkdir(parents=True, exist_ok=True)
            for path in files:
                shutil.copyfile(path, destination / path.name)  # Dropbox's WriteMode.overwrite
                job["processed"] += 1
                job["percentage"] = int(job["processed"] / len(files) * 100)
        except OSError:
            pass  # the old service logs the error and marks the job complete, its percentage where it stopped
        job["complete"] = True

    def _routes(self) -> Flask:
        app = Flask("downloader-uploader-standin")

        @app.post("/download-job")
        def download() -> Any:
            refused = self._refused(post=True)
            if refused:
                return refused
            job = self._job("download")
            files = sorted(p for p in (self.dropbox / "all").iterdir() if p.is_file())
            threading.Thread(target=self._copy, args=(files, self.working / "all", job, False), daemon=True).start()
            return jsonify(job), 201

        @app.post("/upload-job")
        def upload() -> Any:
            refused = self._refused(post=True)
            if refused:
                return refused
            body = request.get_json(silent=True) if request.is_json else None
            classes = body.get("classes") if isinstance(body, dict) else None
            if not classes:
                return jsonify({"code": 400, "message": "Classes not sent"}), 400
            folders = {p.name for p in self.working.iterdir() if p.is_dir()}
            started = []
            for name in (c for c in classes if c in folders):
                job = self._job("upload")
                files = sorted(p for p in (self.working / name).iterdir() if p.is_file())
                threading.Thread(target=self._copy, args=(files, self.dropbox / name, job, True), daemon=True).start()
                started.append(job)
            return jsonify(started), 201

        @app.get("/download-job/<job_id>")
        @app.get("/upload-job/<job_id>")
        def status(job_id: str) -> Any:
            refused = self._refused(post=False)
            if refused:
                return refused
            if job_id not in self.jobs:
                return jsonify({"code": 400, "message": f"Job {job_id} not found"}), 400
            return jsonify({"code": 200, **self.jobs[job_id]}), 200

        return app


def serve_in_thread(app: Flask, port: int) -> Any:
    """The stand-in on 127.0.0.1:port in a daemon thread; returns the server (shutdown() stops it)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
