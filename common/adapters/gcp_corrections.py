"""Corrections on Firestore: corrections/{sha256(bucket, word, content)} = {bucket, word, content, belongs}. A few
documents per class word and bucket, read with one query when a job's examples are learned."""
from __future__ import annotations

import hashlib
from typing import Any

from google.cloud import firestore

from common.adapters.gcp_errors import translated


class FirestoreCorrections:
    def __init__(self, client: firestore.Client, collection: str = "corrections") -> None:
        self._collection = client.collection(collection)

    def _ref(self, bucket: str, word: str, content: str) -> Any:
        return self._collection.document(hashlib.sha256(f"{bucket}\n{word}\n{content}".encode()).hexdigest())

    @translated("storing a correction")
    def record_correction(self, bucket: str, word: str, content: str, belongs: bool) -> None:
        self._ref(bucket, word, content).set({"bucket": bucket, "word": word, "content": content,
                                              "belongs": bool(belongs)})

    @translated("reading corrections")
    def corrections(self, bucket: str, word: str) -> dict[str, bool]:
        query = self._collection.where(filter=firestore.FieldFilter("bucket", "==", bucket)).where(
            filter=firestore.FieldFilter("word", "==", word))
        found = {}
        for snapshot in query.stream():
            data = snapshot.to_dict() or {}
            if isinstance(data.get("content"), str) and isinstance(data.get("belongs"), bool):
                found[data["content"]] = data["belongs"]
        return dict(sorted(found.items()))

    @translated("removing a correction")
    def forget_correction(self, bucket: str, word: str, content: str) -> bool:
        ref = self._ref(bucket, word, content)
        if not ref.get().exists:
            return False
        ref.delete()
        return True

    @translated("reading corrections")
    def corrected_words(self, bucket: str) -> list[str]:
        query = self._collection.where(filter=firestore.FieldFilter("bucket", "==", bucket))
        return sorted({(s.to_dict() or {}).get("word", "") for s in query.stream()} - {""})
