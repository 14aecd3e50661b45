"""Adapters for the ports in common.ports: `gcp` (Cloud Storage, Firestore, Pub/Sub) and `local` (folder, SQLite,
in-process workers)."""
