"""LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." from native code when an interpreter is
made, past Python's logging and any setting it reads. Where LITERT_QUIET is set (the CLI sets it unless
--verbose), standard error is passed through a pipe while interpreters are made and that line is left out;
everything else written meanwhile, by any thread, is written on once they are made."""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

QUIET_ENV = "LITERT_QUIET"
CHATTER = (b"INFO: Created TensorFlow Lite XNNPACK delegate",)
_lock = threading.Lock()  # one redirection at a time: two would restore each other's descriptors


@contextlib.contextmanager
def litert_chatter_filtered() -> Iterator[None]:
    if not os.environ.get(QUIET_ENV):
        yield
        return
    with _lock:
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        saved = os.dup(2)
        chunks: list[bytes] = []
        # A reader drains the pipe as it fills: a writer never blocks on a full pipe.
        reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(read_end, 65536), b"")),
                                  name="stderr-filter", daemon=True)
        reader.start()
        os.dup2(write_end, 2)
        os.close(write_end)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)  # the pipe's last writer is gone: the reader sees its end
            os.close(saved)
            reader.join(timeout=5)
            os.close(read_end)
            kept = b"".join(line for line in b"".join(chunks).splitlines(keepends=True)
                            if not line.startswith(CHATTER))
            if kept:
                os.write(2, kept)
