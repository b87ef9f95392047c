"""The pixel-based routing fallback, run in a bounded child process.

When a routing rule asks for the body region seen in the pixels (docs/routing.md), the node
never decodes in its own process: a crafted header (a few KB of RLE claiming 65535 x 65535
pixels) would make the DICOM listener itself allocate gigabytes. :func:`pixel_region_in_child`
starts ``python -m node.pixel_routing`` with

* an address-space limit (``RLIMIT_AS``, ``pixel_routing_memory_mb``) and a CPU-time limit set
  by the child before it reads anything, and a wall-clock limit enforced by the parent
  (``pixel_routing_timeout_seconds``; the child is killed);
* the declared size of every image checked against ``max_image_mb`` before decoding
  (:func:`pipelines.volume.check_image_size`);
* only a sample decoded: at most :data:`SAMPLED_SLICES` evenly spaced slices of a CT series (one
  radiograph), never the whole volume;
* a lower CPU priority (``nice`` 10) than the node, so the listener keeps answering.

Whatever happens in the child, the node gets a :class:`pipelines.body_region.RegionGuess`, with
region ``unknown`` and the reason when the pixels could not be analysed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

#: Most CT slices decoded by the pixel fallback (evenly spaced along the slice normal).
SAMPLED_SLICES = 12


def pixel_region_in_child(
    files: Sequence[str],
    *,
    memory_mb: int = 1536,
    timeout_s: float = 60.0,
    max_image_mb: float | None = None,
) -> Any:
    """Guess the body region of a series from a few of its images, in a bounded child process.

    Parameters
    ----------
    files:
        Paths of the series' instances.
    memory_mb:
        Address-space limit of the child (MiB).
    timeout_s:
        Wall-clock limit; the child is killed after it.
    max_image_mb:
        Largest decoded image (MiB); ``None``: the child's default
        (:func:`pipelines.volume.max_image_bytes`).

    Returns
    -------
    pipelines.body_region.RegionGuess
        Never raises: a failure gives region ``unknown`` with the reason.
    """
    from pipelines.body_region import RegionGuess

    request = {"files": [str(f) for f in files], "memory_mb": int(memory_mb),
               "cpu_s": max(1, math.ceil(timeout_s)), "max_image_mb": max_image_mb}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "node.pixel_routing"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return RegionGuess(
            ["unknown"],
            f"pixel analysis stopped after {timeout_s:g} s (pixel_routing_timeout_seconds)",
            {},
        )
    except OSError as exc:
        return RegionGuess(["unknown"], f"pixel analysis could not start: {exc}", {})
    if done.returncode != 0 or not done.stdout.strip():
        if done.returncode < 0:
            why = f"killed by signal {-done.returncode}"
        elif "MemoryError" in done.stderr:
            why = f"over its memory limit of {memory_mb} MiB (pixel_routing_memory_mb)"
        else:
            why = f"exit status {done.returncode}"
        logger.warning("pixel analysis child failed (%s): %s", why, done.stderr[-500:])
        return RegionGuess(["unknown"], f"pixel analysis failed: {why}", {})
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return RegionGuess(list(answer["regions"]), str(answer["reason"]), dict(answer["evidence"]))


def sample_region(files: Sequence[str], limit_bytes: int | None = None) -> Any:
    """Guess the region from at most :data:`SAMPLED_SLICES` images of a series (in this process).

    Headers are read first (no pixels); images whose declared decoded size exceeds the limit
    are left out with the reason; only the sampled images are read with their pixel data.

    Returns
    -------
    pipelines.body_region.RegionGuess
    """
    import numpy as np

    from ainode_core.errors import InvalidInputError
    from pipelines.body_region import (
        RegionGuess,
        guess_ct_region,
        guess_radiograph_region,
        load_radiograph,
    )
    from pipelines.volume import check_image_size, load_ct_volume, read_instance

    headers: list[tuple[str, Any]] = []
    refused: list[str] = []
    for path in files:
        try:
            header = read_instance(path, stop_before_pixels=True)
            check_image_size(header, limit_bytes)
        except InvalidInputError as exc:
            refused.append(str(exc))
            continue
        headers.append((path, header))
    if not headers:
        reason = "; ".join(refused[:2]) if refused else "no image"
        return RegionGuess(["unknown"], f"pixels not analysed: {reason}", {})
    modalities = sorted({str(h.get("Modality", "")) for _, h in headers})
    if modalities in (["CR"], ["DX"]):
        path = headers[0][0]
        return guess_radiograph_region(load_radiograph(read_instance(path)))
    if modalities != ["CT"]:
        return RegionGuess(
            ["unknown"], f"no pixel classifier for Modality {'/'.join(modalities) or 'missing'}", {}
        )
    try:
        iop = np.asarray(headers[0][1].ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        position = [
            float(np.asarray(h.ImagePositionPatient, dtype=float) @ normal) for _, h in headers
        ]
        ordered = [headers[i] for i in np.argsort(position)]
    except (AttributeError, TypeError, ValueError):
        ordered = headers
    step = max(1, math.ceil(len(ordered) / SAMPLED_SLICES))
    chosen = ordered[::step][:SAMPLED_SLICES]
    datasets = [read_instance(path) for path, _ in chosen]
    guess = guess_ct_region(load_ct_volume(datasets))
    guess.evidence["series_images"] = float(len(files))
    return guess


def _child_main() -> None:
    """Entry point of the child: limits first, then :func:`sample_region`; JSON on stdout."""
    import resource

    request = json.loads(sys.stdin.read())
    os.nice(10)  # below the listener: the fallback must not slow C-ECHO/C-STORE down
    memory = int(request["memory_mb"]) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = int(request["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    limit_mb = request.get("max_image_mb")
    limit = None
    if limit_mb is not None:
        from pipelines.volume import MAX_IMAGE_MB_ENV

        os.environ[MAX_IMAGE_MB_ENV] = repr(float(limit_mb))  # for the loaders' own checks
        limit = int(float(limit_mb) * 2**20)
    try:
        guess = sample_region(request["files"], limit)
        answer = {"regions": guess.regions, "reason": guess.reason, "evidence": guess.evidence}
    except Exception as exc:  # noqa: BLE001 - every failure becomes the routing reason
        # The loaders turn a decoder's MemoryError into InvalidInputError naming it.
        if isinstance(exc, MemoryError) or "MemoryError" in str(exc):
            reason = (f"pixel analysis over its memory limit of {request['memory_mb']} MiB "
                      "(pixel_routing_memory_mb)")
        else:
            reason = f"pixels could not be analysed: {type(exc).__name__}: {exc}"
        answer = {"regions": ["unknown"], "evidence": {}, "reason": reason}
    sys.stdout.write(json.dumps(answer, default=float) + "\n")


if __name__ == "__main__":
    _child_main()
