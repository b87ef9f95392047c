"""Model benchmark: inference time and peak memory per protocol network, training throughput.

Each measurement runs in a fresh child process, so its peak resident set size
(``VmHWM``, see ``benchmarks/_common.py``) is that of the model alone (plus
Python, torch and MONAI). Cases:

* ``l3``: the shipped ``ainode-l3-phantom`` model on one study: a held-out standard abdominal
  phantom (256 x 256 pixels, 60-76 slices): level network on the MIPs (``locate``) + tissue
  network on the slice (``predict``), through :func:`models.inference.load_learned_model`;
* ``l3-512``: the tissue network on one 512 x 512 slice of 0.75 mm pixels (clinical matrix);
* ``chest``: the shipped ``ainode-chest-phantom`` model (AttentionUnet on a 3 mm grid, sliding
  window 128 x 128) on a held-out standard chest phantom (256 x 256 pixels of 1.4-1.5 mm, 89-111
  slices), loaded as the node loads it (:func:`models.inference.load_configured_model`);
* ``rds``: the shipped ``ainode-rds-phantom`` model (FlexibleUNet EfficientNet-B0 lungs +
  EfficientNetBN-B0 classifier, float16 weights) on a held-out standard synthetic radiograph
  (448-512 rows of 0.28-0.36 mm): ``predict`` + ``classify`` on the predicted lungs;
* ``brain``: the shipped ``ainode-brain-gwr-phantom`` model (DynUNet 3D, resampled to 3 mm,
  sliding window 48^3) on a held-out head phantom (seed 31337, 2 mm pixels, 3 mm slices, 230 mm
  field of view, as ``benchmarks/brain_gwr_model.py``);
* ``brain-arch``: the default brain architecture with random weights on one 160 x 192 x 160
  volume (sliding window 96^3) - timing of the architecture, not of a trained model;
* ``train-l3``: training throughput (samples/s) of the L3 tissue (batch 4 of 128 x 128) and level
  (batch 4 of 112 x 192) networks: forward + Dice-CE + backward + AdamW step, no data loading.

Runs on the CPU, and also on CUDA when torch sees a GPU. Usage::

    .venv/bin/python benchmarks/models.py [--cases l3,chest,...] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # benchmarks/_common.py

from _common import peak_rss_kib, progress

CASES = ("l3", "l3-512", "chest", "rds", "brain", "brain-arch", "train-l3")


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _window(network: Any, x: Any, roi: tuple[int, ...], device: str) -> Any:
    import torch
    from monai.inferers import sliding_window_inference

    with torch.inference_mode(), torch.autocast("cuda", enabled=device == "cuda"):
        return sliding_window_inference(x.to(device), roi, 4, network, overlap=0.25, mode="gaussian")


def run_case(case: str, device: str) -> dict[str, Any]:
    """Run one case in this process; returns timings in seconds."""
    import numpy as np
    import torch

    from models.architectures import DEFAULT_NETWORKS, build_network

    result: dict[str, Any] = {"case": case, "device": device, "threads": torch.get_num_threads()}
    if case in ("l3", "l3-512"):
        from models.inference import load_learned_model
        from models.registry import get_model
        from training.datasets import phantom_parameters
        from training.phantoms.abdomen import make_abdomen_phantom

        model, stats = load_learned_model(get_model("ainode-l3-phantom"), device)
        result["load_s"] = round(stats.load_seconds, 3)
        if case == "l3":
            phantom = make_abdomen_phantom(**phantom_parameters(40_000, "standard"))  # type: ignore[arg-type]
            hu, spacing = phantom.hu, phantom.spacing_mm
            result["input"] = f"{hu.shape} voxels of {spacing} mm"
            assert model.locate is not None, "the shipped L3 model has a level network"
            model.locate(hu, spacing)  # warm-up
            start = time.perf_counter()
            index, _ = model.locate(hu, spacing)
            labels = model.predict(hu[index], spacing[1:])
            _sync(device)
            result["inference_s"] = round(time.perf_counter() - start, 3)
            result["slice_error"] = int(index) - int(phantom.mid_l3_slice)
            result["sma_pixels"] = int((labels == 1).sum())
        else:
            slice_hu = np.random.default_rng(0).normal(0, 50, (512, 512)).astype(np.float32)
            result["input"] = "512 x 512 slice, 0.75 mm"
            model.predict(slice_hu, (0.75, 0.75))
            start = time.perf_counter()
            model.predict(slice_hu, (0.75, 0.75))
            _sync(device)
            result["inference_s"] = round(time.perf_counter() - start, 3)
    elif case in ("chest", "rds", "brain"):
        from models.inference import load_configured_model

        protocol, name = {"chest": ("chest-respiratory-muscle", "ainode-chest-phantom"),
                          "rds": ("neonatal-rds", "ainode-rds-phantom"),
                          "brain": ("brain-gwr", "ainode-brain-gwr-phantom")}[case]
        loaded = load_configured_model(protocol, name, device=device)
        assert loaded is not None, f"{name} not found"
        model, stats = loaded
        result["model"] = name
        result["load_s"] = round(stats.load_seconds, 3)
        if case == "chest":
            from training.train_chest import chest_phantom_case

            sample = chest_phantom_case(40_000, "standard")
            hu, spacing = sample.hu, sample.spacing_mm
            result["input"] = f"{hu.shape} voxels of {tuple(round(v, 2) for v in spacing)} mm"
            model.predict(hu[:8], spacing)  # warm-up
            start = time.perf_counter()
            labels = model.predict(hu, spacing)
            _sync(device)
            result["inference_s"] = round(time.perf_counter() - start, 3)
            truth = sample.labels
            result["dice_thoracic_union"] = round(
                float(2 * ((labels > 0) & (truth > 0)).sum() / ((labels > 0).sum() + (truth > 0).sum())), 4)
        elif case == "brain":
            from training.phantoms.head import make_head_phantom

            head = make_head_phantom(seed=31_337, pixel_spacing_mm=2.0, slice_spacing_mm=3.0,
                                     field_of_view_mm=230.0)
            result["input"] = f"{head.hu.shape} voxels of {tuple(round(v, 2) for v in head.spacing_mm)} mm"
            model.predict(head.hu, head.spacing_mm)  # warm-up
            start = time.perf_counter()
            model.predict(head.hu, head.spacing_mm)
            _sync(device)
            result["inference_s"] = round(time.perf_counter() - start, 3)
        else:
            from training.train_rds import phantom_radiograph_case

            sample = phantom_radiograph_case(40_000, "standard")
            image = sample.hu[0]
            spacing2 = (float(sample.spacing_mm[1]), float(sample.spacing_mm[2]))
            result["input"] = f"{image.shape} radiograph of {tuple(round(v, 3) for v in spacing2)} mm"
            lungs = model.predict(image, spacing2)  # warm-up
            assert model.classify is not None
            model.classify(image, lungs > 0)
            start = time.perf_counter()
            lungs = model.predict(image, spacing2)
            probability = model.classify(image, lungs > 0)
            _sync(device)
            result["inference_s"] = round(time.perf_counter() - start, 3)
            result["rds_probability"] = round(float(probability), 3)
    elif case == "brain-arch":
        arch, args = DEFAULT_NETWORKS["brain-gwr"]["landmarks"]
        network = build_network(arch, args).to(device).eval()
        x = torch.rand(1, 1, 160, 192, 160)
        result["input"] = "160 x 192 x 160 voxels, windows 96^3 (random weights)"
        start = time.perf_counter()
        _window(network, x, (96, 96, 96), device)
        _sync(device)
        result["inference_s"] = round(time.perf_counter() - start, 3)
    elif case == "train-l3":
        from monai.losses import DiceCELoss

        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        for role, shape, n_classes in (("tissue", (4, 1, 128, 128), 5),
                                       ("level", (4, 2, 112, 192), 2)):
            arch, args = DEFAULT_NETWORKS["l3-body-composition"][role]
            network = build_network(arch, args).to(device).train()
            optimiser = torch.optim.AdamW(network.parameters(), lr=1e-3)
            x = torch.rand(shape, device=device)
            y = torch.randint(0, n_classes, (shape[0], 1, *shape[2:]), device=device)
            steps = 10
            for i in range(steps + 2):
                if i == 2:
                    _sync(device)
                    start = time.perf_counter()
                optimiser.zero_grad()
                with torch.autocast("cuda", enabled=device == "cuda"):
                    loss = loss_fn(network(x), y)
                loss.backward()
                optimiser.step()
            _sync(device)
            result[f"{role}_samples_per_s"] = round(steps * shape[0] / (time.perf_counter() - start), 1)
    else:
        raise SystemExit(f"unknown case {case}")
    result["peak_rss_mb"] = round(peak_rss_kib() / 1024, 1)
    if device == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the selected cases, each in a child process, and print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(run_case(*args.child)))
        return 0
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = []
    for device in devices:
        for case in progress(args.cases.split(","), desc=device, unit="case"):
            command = [sys.executable, __file__, "--child", case, device,
                       "--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                results.append({"case": case, "device": device, "error": done.stderr[-500:]})
            else:
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            if not args.json:
                print(json.dumps(results[-1]), flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
