"""Stopping cleanly: SIGTERM stops like Ctrl-C (finish the images in hand, record them, exit resumable)."""
from __future__ import annotations

import signal


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def interrupt_like_ctrl_c() -> None:
    signal.signal(signal.SIGTERM, _raise_interrupt)
