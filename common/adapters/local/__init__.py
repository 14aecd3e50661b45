"""Embedded adapters, one module per technology: a folder is the bucket (files), SQLite the job and prediction
stores (sqlite, jobs, predictions), a thread pool the queue (queue), a JSON Lines file the job events (events), and
an advisory lock keeps one writer per folder (lock)."""
from common.adapters.local.events import JsonLinesEvents
from common.adapters.local.files import STATE_DIR, FolderObjectStore, file_errors
from common.adapters.local.jobs import SqliteJobStore
from common.adapters.local.lock import FolderInUse, FolderLock
from common.adapters.local.predictions import SqlitePredictionStore
from common.adapters.local.queue import InProcessQueue
from common.adapters.local.sqlite import database_errors

__all__ = ["STATE_DIR", "FolderInUse", "FolderLock", "FolderObjectStore", "InProcessQueue", "JsonLinesEvents",
           "SqliteJobStore", "SqlitePredictionStore", "database_errors", "file_errors"]
