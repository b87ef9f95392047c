"""Ingest benchmark: C-STORE throughput of ``ainode serve`` against bare pynetdicom Storage SCPs.

The sender is DCMTK ``storescu`` (``/usr/bin/storescu``), a C program that is never the
bottleneck (a pynetdicom SCU tops out near 45 instances/s and hides the receivers' differences).
N (default 200) uncompressed 512 x 512 16-bit CT files are written to a temporary directory
first (not timed), then sent, in every round and to every target:

* **one association**: one ``storescu`` with all N files;
* **4 parallel associations**: 4 ``storescu`` at once, N/4 files each (aggregate rate = N / wall
  time until the last one ends).

Targets, each in its own process, listening on loopback as AE ``AINODE``:

1. ``bare_scp``: a pynetdicom SCP that writes each received file (``open().write()``), no fsync;
2. ``bare_scp_durable``: the same SCP making each instance durable as ainode promises (temp file,
   fsync, rename, directory fsync: :func:`storage.instance_store.write_atomic`);
3. ``ainode_serve``: ``ainode serve`` as a real subprocess (SQLite job database).

With ``--compare-root DIR`` a fourth target, ``ainode_compare``, runs ``ainode serve`` from
another checkout (e.g. ``git worktree add /tmp/before <commit>``) with the same interpreter, to
measure a change in the same run.

Rounds are interleaved (target by target within a round) and the best of the rounds (default 3)
is reported for each target and mode, with the ratios ainode / durable bare SCP, ainode / bare
SCP and 4 associations / 1 association. Every target must store all N files in every run. Run::

    .venv/bin/python benchmarks/ingest.py [--count 200] [--rounds 3] [--json] [--compare-root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage.instance_store import write_atomic

STORESCU = "/usr/bin/storescu"
TARGETS = ("bare_scp", "bare_scp_durable", "ainode_serve")
MODES = {"1_association": 1, "4_associations": 4}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_instances(directory: Path, count: int, size: int = 512) -> list[Path]:
    """Write ``count`` CT Image Storage files of one series, ``size`` x ``size`` 16-bit pixels."""
    rng = np.random.default_rng(0)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    pixels = rng.integers(0, 2000, size=(size, size), dtype=np.uint16).tobytes()
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.PatientName, ds.PatientID = "BENCH^INGEST", "BENCH"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [-250.0, -250.0, float(index)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.98, 0.98]
        ds.SliceThickness = 1.0
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = pixels
        path = directory / f"{index:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def send(paths: list[Path], port: int, associations: int) -> float:
    """Send ``paths`` with ``associations`` parallel storescu runs; seconds until the last ends."""
    groups = [paths[i::associations] for i in range(associations)]
    start = time.perf_counter()
    runs = [
        subprocess.Popen(
            [STORESCU, "-aec", "AINODE", "-aet", "BENCHSCU", "-to", "30", "-ta", "30",
             "127.0.0.1", str(port), *map(str, group)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for group in groups
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    elapsed = time.perf_counter() - start
    for run, output in zip(runs, outputs, strict=True):
        if run.returncode != 0:
            raise RuntimeError(f"storescu failed ({run.returncode}): {output[-2000:]}")
    return elapsed


def run_bare_scp(directory: Path, port: int, durable: bool) -> None:
    """Serve as a bare Storage SCP until killed (``--bare-scp`` mode)."""

    def handle_store(event: evt.Event) -> int:
        uid = event.request.AffectedSOPInstanceUID
        path = directory / f"{uid}.dcm"
        if durable:
            write_atomic(path, event.encoded_dataset())
        else:
            with open(path, "wb") as handle:
                handle.write(event.encoded_dataset())
        return 0x0000

    ae = AE(ae_title="AINODE")
    ae.maximum_associations = 20
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_supported_context(Verification)
    ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[(evt.EVT_C_STORE, handle_store)])


def start_target(
    name: str, work: Path, port: int, compare_root: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start one target SCP as a subprocess listening on ``port`` as AE AINODE."""
    root = Path(__file__).resolve().parents[1]
    if name == "ainode_compare" and compare_root is not None:
        root = compare_root
    if name in ("ainode_serve", "ainode_compare"):
        args = [sys.executable, "-m", "node", "serve", "--data-dir", str(work),
                "--port", str(port), "--host", "127.0.0.1", "--quiet-seconds", "3600"]
    else:
        work.mkdir(parents=True)
        args = [sys.executable, str(Path(__file__).resolve()), "--bare-scp", str(work), str(port)]
        if name == "bare_scp_durable":
            args.append("--durable")
    log = (work.parent / f"{work.name}.log").open("wb")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=root)


def wait_for_echo(port: int, timeout_s: float = 60) -> None:
    ae = AE(ae_title="BENCHSCU")
    ae.add_requested_context(Verification)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assoc = ae.associate("127.0.0.1", port, ae_title="AINODE")
        if assoc.is_established:
            assoc.release()
            return
        time.sleep(0.3)
    raise RuntimeError(f"the SCP on port {port} did not start")


def measure(
    paths: list[Path], rounds: int, targets: tuple[str, ...] = TARGETS,
    compare_root: Path | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Rates (instances/s) per target and mode, one per round."""
    rates: dict[str, dict[str, list[float]]] = {t: {m: [] for m in MODES} for t in targets}
    work = Path(tempfile.mkdtemp(prefix="ainode-bench-ingest-"))
    steps = tqdm(total=rounds * len(targets) * len(MODES), desc="runs", disable=None,
                 file=sys.stderr, leave=False)
    try:
        for round_index in range(rounds):
            for mode, associations in MODES.items():
                for name in targets:
                    target_dir = work / f"{name}-{mode}-{round_index}"
                    port = free_port()
                    proc = start_target(name, target_dir, port, compare_root)
                    try:
                        wait_for_echo(port)
                        elapsed = send(paths, port, associations)
                    finally:
                        proc.terminate()
                        proc.wait(timeout=30)
                    stored = list(target_dir.rglob("*.dcm"))
                    if len(stored) != len(paths):
                        raise RuntimeError(f"{name} stored {len(stored)} of {len(paths)}")
                    rates[name][mode].append(len(paths) / elapsed)
                    shutil.rmtree(target_dir, ignore_errors=True)
                    steps.update()
    finally:
        steps.close()
        shutil.rmtree(work, ignore_errors=True)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--compare-root", type=Path, default=None,
                        help="another ainode checkout to measure in the same run")
    parser.add_argument("--bare-scp", nargs=2, metavar=("DIR", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--durable", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_scp:
        run_bare_scp(Path(args.bare_scp[0]), int(args.bare_scp[1]), args.durable)
        return 0
    if not Path(STORESCU).exists():
        print(f"{STORESCU} is missing: install DCMTK (apt-get install dcmtk)", file=sys.stderr)
        return 2
    source = Path(tempfile.mkdtemp(prefix="ainode-bench-files-"))
    try:
        paths = write_instances(source, args.count)
        targets = TARGETS + (("ainode_compare",) if args.compare_root else ())
        rates = measure(paths, args.rounds, targets, args.compare_root)
    finally:
        shutil.rmtree(source, ignore_errors=True)
    best = {t: {m: max(v) for m, v in modes.items()} for t, modes in rates.items()}
    one, four = "1_association", "4_associations"
    report = {
        "instances": args.count,
        "rounds": args.rounds,
        "sender": STORESCU,
        "instances_per_s_best": {
            t: {m: round(v, 1) for m, v in ms.items()} for t, ms in best.items()
        },
        "instances_per_s_all": {
            t: {m: [round(v, 1) for v in vs] for m, vs in ms.items()} for t, ms in rates.items()
        },
        "ratio_ainode_to_durable_bare_scp": {
            m: round(best["ainode_serve"][m] / best["bare_scp_durable"][m], 3) for m in MODES
        },
        "ratio_ainode_to_bare_scp": {
            m: round(best["ainode_serve"][m] / best["bare_scp"][m], 3) for m in MODES
        },
        "ratio_4_to_1_associations": {
            t: round(best[t][four] / best[t][one], 3) for t in targets
        },
        "ratio_ainode_to_compare": {
            m: round(best["ainode_serve"][m] / best["ainode_compare"][m], 3) for m in MODES
        } if "ainode_compare" in best else None,
        "cpu_count": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.count} uncompressed 512x512 CT instances sent by DCMTK storescu, best of "
          f"{args.rounds} rounds ({os.cpu_count()} CPUs, load average {report['load_average']})")
    for name in targets:
        for mode in MODES:
            print(f"  {name:<18} {mode:<15} {best[name][mode]:8.1f} instances/s   (rounds: "
                  f"{', '.join(f'{v:.1f}' for v in rates[name][mode])})")
    for mode in MODES:
        print(f"  ainode / durable bare SCP, {mode:<15} = "
              f"{report['ratio_ainode_to_durable_bare_scp'][mode]}")
        print(f"  ainode / bare SCP (no fsync), {mode:<15} = "
              f"{report['ratio_ainode_to_bare_scp'][mode]}")
    for name in targets:
        print(f"  {name}: 4 associations / 1 association = "
              f"{report['ratio_4_to_1_associations'][name]}")
    if report["ratio_ainode_to_compare"]:
        print(f"  ainode / ainode from {args.compare_root}: {report['ratio_ainode_to_compare']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
