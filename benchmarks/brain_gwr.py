"""brain-gwr benchmark: time and peak memory of one 100-slice head CT on CPU.

Writes a 100-slice 512 x 512 head phantom (1.5 mm slices, 0.49 mm pixels, 250 mm field of
view, head rotated and shifted) as a DICOM series into a temporary directory, then, in a fresh
child process (so that its peak resident memory is that of reading + the pipeline only), times

1. reading: ``read_instances`` + ``load_ct_volume``;
2. the pipeline: ``run_brain_gwr`` (skull stripping, registration, labels, refinement,
   measurement, key image);
3. the outputs: ``build_outputs`` (SEG, SR, SC).

and reports the wall time of each stage and the child's peak resident set size: ``VmHWM`` of
``/proc/self/status`` (the high-water mark of this process image). ``getrusage``'s ``ru_maxrss``
is not used: Linux carries it over from the parent across fork + exec, so it would report the
phantom-writing parent's peak. Goal (issue 4): under 30 s and 2 GB on CPU. Run::

    .venv/bin/python benchmarks/brain_gwr.py [--slices 100] [--size 512] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # benchmarks/_common.py

from _common import peak_rss_kib, print_report, progress, run_child


def measure(directory: Path) -> dict[str, float | str | bool | None]:
    """Time and memory of reading ``directory`` and running brain-gwr (child process)."""
    from pipelines.brain_gwr import BrainGWRParameters, run_brain_gwr
    from pipelines.outputs import build_outputs
    from pipelines.volume import load_ct_volume, read_instances

    start = time.perf_counter()
    volume = load_ct_volume(read_instances([directory]).datasets)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    result = run_brain_gwr(volume, BrainGWRParameters())
    pipeline_s = time.perf_counter() - start
    start = time.perf_counter()
    build_outputs(result, software_version="benchmark")
    outputs_s = time.perf_counter() - start
    maxrss_kib = peak_rss_kib()
    return {
        "slices": int(volume.hu.shape[0]),
        "matrix": f"{volume.hu.shape[1]}x{volume.hu.shape[2]}",
        "read_s": round(read_s, 2),
        "pipeline_s": round(pipeline_s, 2),
        "registration_s": result.summary.get("registration_seconds"),
        "outputs_s": round(outputs_s, 2),
        "total_s": round(read_s + pipeline_s + outputs_s, 2),
        "process_peak_rss_mib": round(maxrss_kib / 1024, 1),
        "gwr_bg": result.summary["gwr_bg"],
        "registration_brain_dice": result.summary.get("registration_brain_dice"),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--slice-mm", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return 0

    from training.phantoms.head import make_head_phantom, write_head_series

    with tempfile.TemporaryDirectory(prefix="ainode-brain-bench-") as tmp:
        start = time.perf_counter()
        z_low = -45.0
        phantom = make_head_phantom(
            seed=1, pixel_spacing_mm=250.0 / args.size, field_of_view_mm=250.0,
            slice_spacing_mm=args.slice_mm,
            z_range_mm=(z_low, z_low + (args.slices - 1) * args.slice_mm),
            rotation_deg=(8.0, -5.0, 10.0), shift_mm=(5.0, -8.0, 4.0),
        )
        expected = phantom.expected_gwr
        write_head_series(phantom, tmp)
        del phantom
        prepare_s = time.perf_counter() - start
        rounds = []
        for _ in progress(range(args.rounds), desc="measuring", unit="round"):
            rounds.append(run_child(__file__, "--measure", tmp))
    report: dict[str, object] = dict(rounds[-1])
    for key in ("read_s", "pipeline_s", "outputs_s", "total_s", "process_peak_rss_mib"):
        values = [float(r[key]) for r in rounds]
        report[key] = round(statistics.median(values), 2)
        report[f"{key}_rounds"] = values
    report["phantom_write_s"] = round(prepare_s, 1)
    report["expected_gwr"] = round(expected, 4)
    print_report("brain-gwr benchmark (CPU), medians over rounds", report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
