"""The network alone: VGG19 up to block5_conv4 on its two runtimes (networks.py), batch 1, at the two input
sizes the recipe uses. Median of 7 after 2 warm-up calls, in one process, runtimes alternating per size.

    eval "$(scripts/setup)"; .venv/bin/python bench/trunk_speed.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from common import load, machine
from imgsearch.networks import OpenVinoTrunk, TensorFlowTrunk


def main() -> None:
    print(machine())
    trunks = (("fp32 TensorFlow", TensorFlowTrunk(os.environ["IMGSEARCH_VGG19_WEIGHTS"])),
              ("int8 OpenVINO", OpenVinoTrunk(Path(os.environ["IMGSEARCH_INT8_MODEL"]))))
    for shape in [(1, 224, 224, 3), (1, 336, 448, 3)]:
        x = np.random.default_rng(0).uniform(-120, 150, shape).astype(np.float32)  # preprocessed pixels
        row = []
        for name, trunk in trunks:
            trunk(x), trunk(x)
            times = []
            for _ in range(7):
                started = time.perf_counter()
                trunk(x)
                times.append(time.perf_counter() - started)
            row.append(f"{name} {1000 * np.median(times):.0f} ms")
        print(f"{shape[1]}x{shape[2]}: " + " | ".join(row) + f"  (load {load()})")


if __name__ == "__main__":
    main()
