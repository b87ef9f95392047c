"""Ingest benchmark: C-STORE throughput of ``ainode serve`` against a bare pynetdicom Storage SCP.

Sends N (default 200) uncompressed 512x512 16-bit CT instances over one association, from a
pynetdicom SCU in this process, to:

1. a bare pynetdicom Storage SCP that only writes each received file (``open().write()``), the
   baseline named in the issue;
2. the same bare SCP writing each file durably (temp file, fsync, rename, directory fsync), i.e.
   the floor of any SCP that keeps the "nothing acknowledged is lost" promise on this disk;
3. ``ainode serve`` started as a real subprocess (durable store + job database record per
   instance, SQLite by default).

Reports instances/s and the ratio of ainode to each baseline. The instances are built in memory
before timing; the SCU's own encoding cost is the same for every target. Run:

    .venv/bin/python benchmarks/ingest.py [--count 200] [--json]
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


def bare_scp(directory: Path, durable: bool) -> tuple[AE, object, int]:
    """Start the bare Storage SCP; returns (ae, server, port)."""

    def handle_store(event: evt.Event) -> int:
        uid = event.request.AffectedSOPInstanceUID
        path = directory / f"{uid}.dcm"
        if durable:
            write_atomic(path, event.encoded_dataset())
        else:
            with open(path, "wb") as handle:
                handle.write(event.encoded_dataset())
        return 0x0000

    ae = AE(ae_title="BARESCP")
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_supported_context(Verification)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle_store)]
    )
    return ae, server, port


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    datasets = make_instances(args.count)
    results: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="ainode-bench-ingest-"))
    try:
        for name, durable in (("bare_scp", False), ("bare_scp_durable", True)):
            target = work / name
            target.mkdir()
            _, server, port = bare_scp(target, durable)
            results[name] = args.count / send_all(datasets, port, "BARESCP")
            server.shutdown()  # type: ignore[attr-defined]
            assert len(list(target.iterdir())) == args.count
        port = free_port()
        log = (work / "serve.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "node", "serve", "--data-dir", str(work / "node"),
             "--port", str(port), "--host", "127.0.0.1", "--quiet-seconds", "3600"],
            stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
        )
        try:
            wait_for_echo(port)
            results["ainode_serve"] = args.count / send_all(datasets, port, "AINODE")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        stored = list((work / "node" / "instances").rglob("*.dcm"))
        assert len(stored) == args.count, f"ainode stored {len(stored)} of {args.count}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "instances": args.count,
        "instances_per_s": {k: round(v, 1) for k, v in results.items()},
        "ratio_to_bare_scp": round(results["ainode_serve"] / results["bare_scp"], 3),
        "ratio_to_bare_scp_durable": round(results["ainode_serve"] / results["bare_scp_durable"], 3),
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.count} uncompressed 512x512 CT instances over one association")
        for name, rate in report["instances_per_s"].items():  # type: ignore[union-attr]
            print(f"  {name:<18} {rate:8.1f} instances/s")
        print(f"  ainode / bare SCP         = {report['ratio_to_bare_scp']}")
        print(f"  ainode / durable bare SCP = {report['ratio_to_bare_scp_durable']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
