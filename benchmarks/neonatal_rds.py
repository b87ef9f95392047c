"""neonatal-rds benchmark: time and peak memory per radiograph on CPU (goal: under 3 s).

For each input, in a fresh child process (so that its peak resident set size is that of one
radiograph only), times

1. ``pipeline_s``: ``pydicom.dcmread`` + ``run_from_datasets`` (decode, Modality/VOI LUT,
   reference lung fields, measurements, key image);
2. ``outputs_s``: ``build_outputs`` (SEG, SR, SC with highdicom);

each as wall time and as CPU time of the process (``time.process_time``: less sensitive to other
jobs on a shared machine), once "cold" (first radiograph in the process: includes lazy imports
of scipy/skimage/highdicom submodules) and once "warm" (second run, as in a long-running node),
and reports the child's peak RSS (``resource.getrusage``, Linux kilobytes -> MiB). Inputs: the
real adult chest radiograph RG1 of pydicom-data, uncompressed (1955 x 1841) and JPEG 2000
reversible, and a 512 x 448 neonatal phantom with devices. Run:

    .venv/bin/python benchmarks/neonatal_rds.py [--json] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _run_once(path: str) -> dict[str, float]:
    import pydicom

    from pipelines.outputs import build_outputs
    from pipelines.neonatal_rds import run_from_datasets

    times: dict[str, float] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    ds = pydicom.dcmread(path)
    result = run_from_datasets([ds], {})
    times["pipeline_s"] = time.perf_counter() - wall
    times["pipeline_cpu_s"] = time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    build_outputs(result, software_version="benchmark")
    times["outputs_s"] = time.perf_counter() - wall
    times["outputs_cpu_s"] = time.process_time() - cpu
    times["total_s"] = times["pipeline_s"] + times["outputs_s"]
    times["total_cpu_s"] = times["pipeline_cpu_s"] + times["outputs_cpu_s"]
    return times


def measure(path: str) -> dict[str, float | str]:
    """Cold and warm time of one radiograph (read + pipeline, outputs), in this process."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    row: dict[str, float | str] = {"input": Path(path).name, "matrix": f"{ds.Rows}x{ds.Columns}"}
    for run in ("cold", "warm"):
        for key, value in _run_once(path).items():
            row[f"{run}_{key}"] = round(value, 3)
    row["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    return row


def _inputs(directory: Path) -> list[str]:
    import data_store

    from training.phantoms.chest_radiograph import make_chest_radiograph, phantom_to_dataset

    data = Path(os.path.dirname(data_store.__file__)) / "data"
    phantom = directory / "phantom.dcm"
    phantom_to_dataset(make_chest_radiograph()).save_as(phantom, enforce_file_format=True)
    return [str(data / "RG1_UNCR.dcm"), str(data / "RG1_J2KR.dcm"), str(phantom)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    parser.add_argument("--repeat", type=int, default=1, help="runs per input")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for path in tqdm(_inputs(Path(tmp)), desc="radiographs", unit="input", disable=None,
                         file=sys.stderr, leave=False):
            for _ in range(args.repeat):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", path],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                row = json.loads(out.stdout.strip().splitlines()[-1])
                if args.json:
                    print(json.dumps(row))
                else:
                    print(
                        f"{row['input']:<14} {row['matrix']:>10}  "
                        f"cold {row['cold_total_s']:.2f} s (CPU {row['cold_total_cpu_s']:.2f} s)  "
                        f"warm: pipeline {row['warm_pipeline_s']:.2f} s "
                        f"(CPU {row['warm_pipeline_cpu_s']:.2f}), outputs "
                        f"{row['warm_outputs_s']:.2f} s (CPU {row['warm_outputs_cpu_s']:.2f}), "
                        f"total {row['warm_total_s']:.2f} s (CPU {row['warm_total_cpu_s']:.2f})  "
                        f"peak RSS {row['peak_rss_mib']:.0f} MiB"
                    )


if __name__ == "__main__":
    main()
