"""Chest respiratory-muscle benchmark: time and peak memory of a 300-slice 512 x 512 chest CT.

Writes the chest phantom (:mod:`training.phantoms.chest`, 0.75 mm pixels, slices of
``PHANTOM_LENGTH_MM / slices`` mm, about 1.5 mm for 300 slices) as a DICOM series into a temporary
directory, then, in a fresh child process (so that its peak resident memory is that of reading,
the pipeline and the outputs only), times

1. reading: ``read_instances`` + ``load_ct_volume``;
2. the pipeline: ``run_chest_respiratory_muscle`` (lungs, spine, classes, levels, measurements,
   key image);
3. the DICOM outputs: ``build_outputs`` (SEG, SR, SC, in memory);

and reports wall times, the child's CPU time (all threads) and its peak resident set size (``resource.getrusage``, Linux
kilobytes). Goal (issue 6): under 60 s and 4 GB on CPU. Run:

    .venv/bin/python benchmarks/chest_respiratory_muscle.py [--slices 300] [--size 512] [--json]
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


def measure(directory: Path) -> dict[str, float | str | int | None]:
    """Time and memory of reading ``directory``, running the pipeline and building outputs."""
    from pipelines.chest_respiratory_muscle import run_chest_respiratory_muscle
    from pipelines.outputs import build_outputs
    from pipelines.volume import load_ct_volume, read_instances

    cpu_start = time.process_time()
    start = time.perf_counter()
    volume = load_ct_volume(read_instances([directory]).datasets)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    result = run_chest_respiratory_muscle(volume)
    pipeline_s = time.perf_counter() - start
    start = time.perf_counter()
    objects = build_outputs(result, software_version="benchmark")
    outputs_s = time.perf_counter() - start
    cpu_s = time.process_time() - cpu_start
    maxrss_kib = peak_rss_kib()
    s = result.summary
    return {
        "slices": int(volume.hu.shape[0]),
        "matrix": f"{volume.hu.shape[1]}x{volume.hu.shape[2]}",
        "slice_spacing_mm": round(float(volume.spacing_mm[0]), 3),
        "read_s": round(read_s, 2),
        "pipeline_s": round(pipeline_s, 2),
        "outputs_s": round(outputs_s, 2),
        "total_s": round(read_s + pipeline_s + outputs_s, 2),
        "process_cpu_s": round(cpu_s, 2),
        "process_peak_rss_mib": round(maxrss_kib / 1024, 1),
        "seg_frames": int(objects.seg.NumberOfFrames) if objects.seg is not None else 0,
        "total_respiratory_muscle_cm3": s.get("total_respiratory_muscle_cm3"),
        "t4_slice": s["levels"]["t4_slice"],
        "t12_slice": s["levels"]["t12_slice"],
        "levels_method": s["levels"]["method"],
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

    import numpy as np

    from training.phantoms.chest import PHANTOM_LENGTH_MM, make_chest_phantom, write_chest_series

    with tempfile.TemporaryDirectory(prefix="ainode-chest-bench-") as tmp:
        start = time.perf_counter()
        phantom = make_chest_phantom(
            rows=args.size, columns=args.size, pixel_spacing_mm=384.0 / args.size,
            slice_thickness_mm=PHANTOM_LENGTH_MM / args.slices * (1 + 1e-6),
        )
        voxel_cm3 = float(np.prod(phantom.spacing_mm)) / 1000.0
        k0, k1 = phantom.lung_slab
        truth = phantom.labels[k0 : k1 + 1]
        truth_resp = float(np.isin(truth, (1, 2, 3, 4, 5, 6)).sum() * voxel_cm3)
        truth_t4, truth_t12 = phantom.mid_slice["T4"], phantom.mid_slice["T12"]
        write_chest_series(phantom, tmp)
        del phantom, truth
        prepare_s = time.perf_counter() - start
        with progress(total=1, desc="measuring in a child process", unit="run") as bar:
            report = run_child(__file__, "--measure", tmp)
            bar.update(1)
    report["phantom_write_s"] = round(prepare_s, 1)
    report["truth_respiratory_muscle_cm3_in_lung_slab"] = round(truth_resp, 2)
    report["truth_t4_slice"] = truth_t4
    report["truth_t12_slice"] = truth_t12
    print_report("Chest respiratory-muscle benchmark (CPU)", report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
