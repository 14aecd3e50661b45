"""What machine a benchmark ran on: its figures mean nothing without it (int8 speed depends on the CPU's vector
instructions: AVX2 alone, AVX-512 VNNI or AMX differ by an order of magnitude for ResNet50)."""
from __future__ import annotations

import os
from pathlib import Path

VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")


def describe() -> dict[str, object]:
    model, flags = "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    return {"cpu": model, "cpus": os.cpu_count(), "vector_flags": [f for f in VECTOR_FLAGS if f in flags]}


def emit(result: dict[str, object], out: Path | None) -> None:
    """A benchmark's result: printed as JSON, and kept in `out` when given (bench/results/)."""
    import json

    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")
