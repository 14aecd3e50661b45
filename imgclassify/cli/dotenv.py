"""Keys where the old system kept them: a `.env` file of KEY=VALUE lines, as the old services read it with
python-dotenv. Parsed here rather than with python-dotenv (no new dependency in the slim install for a format of a
few lines): blank lines and `#` comments skipped, an optional leading `export `, a value in single or double quotes
taken as written (double quotes also read \\n, \\t, \\" and \\\\), an unquoted value up to ` #`. The environment
wins over a file, as python-dotenv's default (override=False) has it; the first file that sets a name wins."""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*?)\s*$")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "r": "\r"}


def parse(text: str) -> dict[str, str]:
    """The KEY=VALUE pairs of a .env file's text (lines that are not one are skipped, as python-dotenv does)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        found = _LINE.match(line)
        if found is None:
            continue
        name, raw = found.groups()
        values[name] = _value(raw)
    return values


def _value(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1]
    if raw[:1] == '"':
        end = raw.rfind('"')
        inner = raw[1:end] if end > 0 else raw[1:]
        return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), inner)
    return re.split(r"\s+#", raw, maxsplit=1)[0].strip()


@dataclass(frozen=True)
class Loaded:
    """Which names came from which file (for saying at start where the key came from)."""

    sources: dict[str, Path]

    def source(self, name: str, env: MutableMapping[str, str]) -> str:
        if name in self.sources:
            return str(self.sources[name])
        return "the environment" if env.get(name) else ""


def load(folders: Iterable[Path], env: MutableMapping[str, str] | None = None) -> Loaded:
    """Set each name the `.env` files in these folders (in order) give that the environment lacks."""
    env = os.environ if env is None else env
    sources: dict[str, Path] = {}
    seen: set[Path] = set()
    for folder in folders:
        path = (folder / ".env").resolve()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError):
            continue
        for name, value in parse(text).items():
            if name not in env:
                env[name] = value
                sources[name] = path
    return Loaded(sources)
