"""Benchmark of the L1 plug-in: time and peak memory of one job's work on a phantom CT.

Usage (from the repository root, the plug-in importable, e.g. ``PYTHONPATH=examples/
ainode-l1-trabecular``)::

    python examples/ainode-l1-trabecular/benchmarks/l1_trabecular.py [--slices 150]

Writes an abdominal phantom series (512 x 512 pixels of 0.75 mm, 2 mm slices; T10 to sacrum)
to a temporary folder, then measures in a fresh child process (so its peak memory is that of
the measured work only): reading the files, building the volume, and the method (spine
labelling, ROI, key image); module imports are done before timing. Peak memory = ``VmHWM`` of
``/proc/self/status``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def measure(directory: str) -> dict[str, float]:
    """Read, load and measure the series in ``directory``; times in s, memory in MiB."""
    from ainode_l1.method import run_l1_trabecular
    from ainode_l1.parameters import L1Parameters
    from pipelines.protocol import PatientContext
    from pipelines.volume import load_ct_volume, read_instances

    import scipy.signal  # noqa: F401  imported by the spine labelling; not timed (cold import)

    t0 = time.perf_counter()
    datasets = read_instances([directory]).datasets
    volume = load_ct_volume(datasets)
    t1 = time.perf_counter()
    result = run_l1_trabecular(volume, L1Parameters(), PatientContext.from_headers(datasets))
    t2 = time.perf_counter()
    return {
        "slices": float(volume.hu.shape[0]),
        "load_s": round(t1 - t0, 2),
        "method_s": round(t2 - t1, 2),
        "peak_rss_mib": round(_peak_rss_mib(), 0),
        "l1_trabecular_mean_hu": float(result.summary["l1_trabecular_mean_hu"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=150)
    parser.add_argument("--measure", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    from training.phantoms.abdomen import make_abdomen_phantom, write_phantom_series

    with tempfile.TemporaryDirectory() as tmp:
        phantom = make_abdomen_phantom(n_slices=args.slices, rows=512, columns=512,
                                       pixel_spacing_mm=0.75, slice_thickness_mm=2.0, seed=1)
        write_phantom_series(phantom, tmp)
        del phantom
        child = subprocess.run([sys.executable, __file__, "--measure", tmp],
                               capture_output=True, text=True, check=True)
        print(child.stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
