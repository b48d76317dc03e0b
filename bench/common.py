"""Shared bits of the benchmarks: where things are, and what the machine looked like while they ran."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
WEIGHTS = SHARED / "models" / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
COVERS = SHARED / "datasets" / "smvs_dvd_covers"
RESULTS = REPO / "bench" / "results"


def machine() -> dict:
    """CPU model, cores, memory and the load average now (the machine is shared: load matters)."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {"cpu": cpu, "nproc": os.cpu_count(), "mem_gib": round(mem_kb / 2**20, 1),
            "python": platform.python_version(), "loadavg": load()}


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def p95(values: list[float]) -> float:
    """The 95th percentile, nearest rank (no interpolation: one of the values)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def write_json(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
