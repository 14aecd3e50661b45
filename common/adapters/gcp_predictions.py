"""Stored predictions on Firestore: predictions/{sha256(model + content)} = {model, content, prediction (bytes,
~3.8 KB, ~6 KB with features)}. One document read per lookup, or one batched read for a delivery's photos; chosen
over Storage objects because the job store is already a Firestore client in classify_image."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from google.cloud import firestore

from common.adapters.gcp_errors import translated

GET_ALL_BATCH = 300  # documents per batched read: well under a request's size limit at ~6 KB each


class FirestorePredictionStore:
    def __init__(self, client: firestore.Client, collection: str = "predictions") -> None:
        self._client = client
        self._collection = client.collection(collection)

    def _ref(self, model: str, content: str) -> Any:
        return self._collection.document(hashlib.sha256(f"{model}\n{content}".encode()).hexdigest())

    @staticmethod
    def _prediction(data: dict[str, Any], model: str, content: str) -> bytes | None:
        """The stored bytes, or None when the document is another (model, content)'s (a hash collision)."""
        if data.get("model") != model or data.get("content") != content:
            return None
        prediction = data.get("prediction")
        return bytes(prediction) if isinstance(prediction, (bytes, bytearray)) else b""

    @translated("reading a stored prediction")
    def get(self, model: str, content: str) -> bytes | None:
        snapshot = self._ref(model, content).get()
        return self._prediction(snapshot.to_dict() or {}, model, content) if snapshot.exists else None

    @translated("reading stored predictions")
    def get_many(self, model: str, contents: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        wanted = list(dict.fromkeys(contents))
        for start in range(0, len(wanted), GET_ALL_BATCH):
            refs = {content: self._ref(model, content) for content in wanted[start:start + GET_ALL_BATCH]}
            by_path = {ref.path: content for content, ref in refs.items()}
            for snapshot in self._client.get_all(list(refs.values())):
                content = by_path.get(snapshot.reference.path)
                if snapshot.exists and content is not None:
                    prediction = self._prediction(snapshot.to_dict() or {}, model, content)
                    if prediction is not None:
                        found[content] = prediction
        return found

    @translated("storing a prediction")
    def put(self, model: str, content: str, prediction: bytes) -> None:
        self._ref(model, content).set({"model": model, "content": content, "prediction": prediction})
