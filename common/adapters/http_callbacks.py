"""Completion callbacks over HTTP(S), with the standard library (no client library needed for one POST)."""
from __future__ import annotations

import urllib.error
import urllib.request

from common.domain.errors import TransientError


class UrllibCallbackSender:
    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only, validated
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out: may pass
            raise TransientError(f"callback {url}: {exc}") from exc
