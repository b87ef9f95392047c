"""Ingest benchmark: C-STORE throughput of ``ainode serve`` against a bare pynetdicom Storage SCP.

Sends N (default 200) uncompressed 512x512 16-bit CT instances over one association, from a
pynetdicom SCU in this process, to:

1. a bare pynetdicom Storage SCP that only writes each received file (``open().write()``), the
   baseline named in the issue;
2. the same bare SCP writing each file durably (temp file, fsync, rename, directory fsync), i.e.
   the floor of any SCP that keeps the "nothing acknowledged is lost" promise on this disk;
3. ``ainode serve`` started as a real subprocess (durable store + job database record per
   instance, SQLite by default).

Every SCP runs in its own process (the bare SCPs via ``--bare-scp``), so none shares the GIL with
the SCU. The three targets are measured in interleaved rounds (default 5) and the median rate of
each is reported, because fsync latency and scheduling on a shared disk varies from run to run. The instances are
built in memory before timing; the SCU's own encoding cost is the same for every target. Run:

    .venv/bin/python benchmarks/ingest.py [--count 200] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_instances(count: int, size: int = 512) -> list[Dataset]:
    """``count`` CT Image Storage datasets of one series, ``size`` x ``size`` 16-bit pixels."""
    rng = np.random.default_rng(0)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    pixels = rng.integers(0, 2000, size=(size, size), dtype=np.uint16).tobytes()
    datasets = []
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
        datasets.append(ds)
    return datasets


def send_all(datasets: list[Dataset], port: int, ae_title: str) -> float:
    """Send everything over one association; returns the seconds taken (association included)."""
    ae = AE(ae_title="BENCHSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    start = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    assert assoc.is_established, "association failed"
    for ds in datasets:
        status = assoc.send_c_store(ds)
        assert status and status.Status == 0, f"C-STORE failed: {status}"
    assoc.release()
    return time.perf_counter() - start


def run_bare_scp(directory: Path, port: int, durable: bool) -> None:
    """Serve as the bare Storage SCP until killed (``--bare-scp`` mode)."""

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
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_supported_context(Verification)
    ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[(evt.EVT_C_STORE, handle_store)])


def start_target(name: str, work: Path, port: int) -> subprocess.Popen[bytes]:
    """Start one target SCP as a subprocess listening on ``port`` as AE AINODE."""
    root = Path(__file__).resolve().parents[1]
    if name == "ainode_serve":
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
    raise RuntimeError("ainode serve did not start")


TARGETS = ("bare_scp", "bare_scp_durable", "ainode_serve")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--bare-scp", nargs=2, metavar=("DIR", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--durable", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_scp:
        run_bare_scp(Path(args.bare_scp[0]), int(args.bare_scp[1]), args.durable)
        return 0
    datasets = make_instances(args.count)
    rates: dict[str, list[float]] = {name: [] for name in TARGETS}
    work = Path(tempfile.mkdtemp(prefix="ainode-bench-ingest-"))
    try:
        for round_index in tqdm(range(args.rounds), desc="rounds", unit="round", disable=None,
                                file=sys.stderr, leave=False):
            for name in TARGETS:
                target_dir = work / f"{name}-{round_index}"
                port = free_port()
                proc = start_target(name, target_dir, port)
                try:
                    wait_for_echo(port)
                    rates[name].append(args.count / send_all(datasets, port, "AINODE"))
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
                stored = list(target_dir.rglob("*.dcm"))
                assert len(stored) == args.count, f"{name} stored {len(stored)} of {args.count}"
                shutil.rmtree(target_dir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {name: statistics.median(values) for name, values in rates.items()}
    report = {
        "instances": args.count,
        "rounds": args.rounds,
        "instances_per_s_median": {k: round(v, 1) for k, v in median.items()},
        "instances_per_s_all": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
        "ratio_to_bare_scp": round(median["ainode_serve"] / median["bare_scp"], 3),
        "ratio_to_bare_scp_durable": round(median["ainode_serve"] / median["bare_scp_durable"], 3),
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.count} uncompressed 512x512 CT instances over one association, "
              f"median of {args.rounds} rounds")
        for name in TARGETS:
            print(f"  {name:<18} {median[name]:8.1f} instances/s   "
                  f"(rounds: {', '.join(f'{v:.1f}' for v in rates[name])})")
        print(f"  ainode / bare SCP         = {report['ratio_to_bare_scp']}")
        print(f"  ainode / durable bare SCP = {report['ratio_to_bare_scp_durable']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
