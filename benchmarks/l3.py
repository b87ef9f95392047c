"""L3 body-composition benchmark: time and peak memory of loading a series and running the pipeline.

Writes a 300-slice 512 x 512 abdominal phantom (1.0 mm slices, 0.75 mm pixels) as a DICOM series
into a temporary directory, then, in a fresh child process (so its peak resident memory is that
of reading + the pipeline only), times

1. reading: ``read_instances`` + ``load_ct_volume``;
2. the pipeline: ``run_l3_body_composition`` (spine labelling, segmentation, measurements, key
   image);

and reports wall time of each stage and the child's peak resident set size
(``VmHWM``, see ``benchmarks/_common.py``; tracemalloc is not used because it slows NumPy-heavy
code down and would distort the timings). Goal: under 20 s and
3 GB on CPU. Run:

    .venv/bin/python benchmarks/l3.py [--slices 300] [--size 512] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # benchmarks/_common.py

from _common import peak_rss_kib, print_report, progress, run_child


def measure(directory: Path) -> dict[str, float | str | bool]:
    """Time and memory of reading ``directory`` and running the L3 pipeline (child process)."""
    from pipelines.l3_body_composition import run_l3_body_composition
    from pipelines.volume import load_ct_volume, read_instances

    start = time.perf_counter()
    volume = load_ct_volume(read_instances([directory]).datasets)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    result = run_l3_body_composition(volume)
    pipeline_s = time.perf_counter() - start
    maxrss_kib = peak_rss_kib()
    return {
        "slices": int(volume.hu.shape[0]),
        "matrix": f"{volume.hu.shape[1]}x{volume.hu.shape[2]}",
        "read_s": round(read_s, 2),
        "pipeline_s": round(pipeline_s, 2),
        "total_s": round(read_s + pipeline_s, 2),
        "process_peak_rss_mib": round(maxrss_kib / 1024, 1),
        "level": str(result.summary["level"]),
        "level_verified": bool(result.summary["level_verified"]),
        "sma_cm2": float(result.summary["sma_cm2"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return 0

    from training.phantoms.abdomen import make_abdomen_phantom, write_phantom_series

    with tempfile.TemporaryDirectory(prefix="ainode-l3-bench-") as tmp:
        start = time.perf_counter()
        phantom = make_abdomen_phantom(
            n_slices=args.slices, rows=args.size, columns=args.size,
            pixel_spacing_mm=384.0 / args.size, slice_thickness_mm=300.0 / args.slices,
        )
        truth_sma = phantom.truth_l3["sma_cm2"]
        write_phantom_series(phantom, tmp)
        del phantom
        prepare_s = time.perf_counter() - start
        with progress(total=1, desc="measuring in a child process", unit="run") as bar:
            report = run_child(__file__, "--measure", tmp)
            bar.update(1)
    report["phantom_write_s"] = round(prepare_s, 1)
    report["truth_sma_cm2"] = round(truth_sma, 2)
    print_report("L3 body composition benchmark (CPU)", report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
