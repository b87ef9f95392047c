"""Benchmark of the shipped brain-gwr model: CPU inference time and peak memory for one study.

Runs in a fresh process: builds a held-out head phantom (seed 31337, 2 mm pixels, 3 mm slices,
230 mm field of view, or the clinical-like grid with ``--clinical``: 0.5 mm pixels, 512 x 512,
5 mm slices), loads ``ainode-brain-gwr-phantom`` through :func:`models.inference.load_learned_model`
(weights verified) and times ``predict`` (resampling to 3 mm, 3D sliding window 48^3, overlap
0.25, probabilities resampled back, argmax) over ``--repeat`` calls. Peak memory is the
process's maximum resident set size (Python, torch and MONAI included), also reported before the
model is loaded (after building the phantom). Usage::

    .venv/bin/python benchmarks/brain_gwr_model.py [--threads 1] [--clinical] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--clinical", action="store_true", help="0.5 mm x 512 x 512, 5 mm slices")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from models.inference import load_learned_model
    from models.registry import get_model
    from training.phantoms.head import make_head_phantom

    if args.clinical:
        phantom = make_head_phantom(seed=31_337, pixel_spacing_mm=0.5, slice_spacing_mm=5.0,
                                    field_of_view_mm=256.0)
    else:
        phantom = make_head_phantom(seed=31_337, pixel_spacing_mm=2.0, slice_spacing_mm=3.0,
                                    field_of_view_mm=230.0)
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    model, _ = load_learned_model(get_model("ainode-brain-gwr-phantom"), "cpu")
    load_s = time.perf_counter() - start
    times = []
    for _ in tqdm(range(args.repeat), desc="inference", disable=None, file=sys.stderr, leave=False):
        start = time.perf_counter()
        model.predict(phantom.hu, phantom.spacing_mm)
        times.append(time.perf_counter() - start)
    result = {
        "input_shape": list(phantom.hu.shape), "spacing_mm": list(phantom.spacing_mm),
        "threads": torch.get_num_threads(), "load_s": round(load_s, 3),
        "predict_s_min": round(min(times), 3), "predict_s_max": round(max(times), 3),
        "peak_rss_before_model_mb": round(rss_before_mb, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
