"""``ainode demo``: a real abdominal CT slice through a node and back to a local PACS.

Starts a local PACS (Orthanc when installed, otherwise an in-process Storage SCP), starts a node
that sends its results there, sends the real CT slice from the PyPI package ``pydicom-data``
(``explicit_VR-UN.dcm``: JPEG 2000 lossless, elements stored with VR UN, at about L1-L2) by C-STORE,
waits for the job, and prints the measurements and the SEG, SR and SC the PACS received.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ainode_core.errors import AINodeError

DEMO_FILE = "explicit_VR-UN.dcm"
HEADLINE_RESULTS = [
    ("level", "vertebral level"),
    ("level_verified", "level verified"),
    ("sma_cm2", "skeletal muscle area SMA (cm2)"),
    ("muscle_mean_hu", "muscle mean attenuation (HU)"),
    ("sat_area_cm2", "subcutaneous fat SAT (cm2)"),
    ("vat_area_cm2", "visceral fat VAT (cm2)"),
    ("imat_area_cm2", "intermuscular fat IMAT (cm2)"),
    ("smi_cm2_per_m2", "skeletal muscle index SMI (cm2/m2)"),
    ("smi_reason", "SMI"),
    ("low_smi", "low SMI"),
    ("validation_status", "validation status"),
    ("disclaimer", "note"),
]
SOP_CLASS_NAMES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.88.34": "SR",
    "1.2.840.10008.5.1.4.1.1.7": "SC",
}


def demo_input() -> Path:
    """Path of the real CT slice shipped by ``pydicom-data``.

    Raises
    ------
    AINodeError
        If ``pydicom-data`` is not installed.
    """
    try:
        import data_store
    except ImportError as exc:
        raise AINodeError(
            "the demo needs the PyPI package pydicom-data: pip install 'ainode[demo]'"
        ) from exc
    path = Path(data_store.__file__).parent / "data" / DEMO_FILE
    if not path.is_file():
        raise AINodeError(f"{path} is missing from pydicom-data")
    return path


def send_file(path: Path, host: str, port: int, ae_title: str) -> int:
    """C-STORE one file with pynetdicom; returns the status code."""
    import pydicom
    from pynetdicom import AE

    ds = pydicom.dcmread(path)
    ae = AE(ae_title="DEMOSCU")
    ae.add_requested_context(ds.SOPClassUID, [str(ds.file_meta.TransferSyntaxUID)])
    assoc = ae.associate(host, port, ae_title=ae_title)
    if not assoc.is_established:
        raise AINodeError(f"could not associate with the node at {host}:{port}")
    status = assoc.send_c_store(ds)
    assoc.release()
    return int(status.Status) if status else -1


def run_demo(
    work_dir: Path | None = None,
    keep: bool = False,
    timeout_s: float = 300.0,
    pacs_kind: str = "auto",
) -> int:
    """Run the demo; prints the results and returns an exit status (0 = the PACS got all three).

    ``pacs_kind``: ``"orthanc"``, ``"builtin"`` (in-process Storage SCP) or ``"auto"`` (Orthanc when
    installed).
    """
    from node.config import Destination, Settings
    from node.local_pacs import (
        InProcessStorageSCP,
        OrthancPACS,
        find_free_port,
        find_orthanc_binary,
    )
    from node.server import Node
    from storage.models import JobState

    source = demo_input()
    owns_dir = work_dir is None
    root = Path(tempfile.mkdtemp(prefix="ainode-demo-")) if work_dir is None else work_dir
    root.mkdir(parents=True, exist_ok=True)
    status = 1
    with ExitStack() as stack:
        use_orthanc = pacs_kind == "orthanc" or (
            pacs_kind == "auto" and find_orthanc_binary() is not None
        )
        if use_orthanc:
            pacs: Any = stack.enter_context(OrthancPACS(root / "orthanc"))
            pacs_kind = "Orthanc"
        else:
            pacs = stack.enter_context(InProcessStorageSCP(root / "pacs"))
            pacs_kind = "in-process Storage SCP" + (
                " (Orthanc is not installed)" if pacs_kind == "auto" else ""
            )
        print(f"PACS: {pacs_kind} {pacs.ae_title}@{pacs.host}:{pacs.port}")
        settings = Settings(
            data_dir=root / "node",
            host="127.0.0.1",
            port=find_free_port(),
            ae_title="AINODE",
            quiet_seconds=2.0,
            destinations=[Destination(ae_title=pacs.ae_title, host=pacs.host, port=pacs.port)],
            send_backoff_seconds=2.0,
            log_level="WARNING",
        )
        node = stack.enter_context(Node(settings))
        print(f"node: AINODE@127.0.0.1:{settings.port}, data in {settings.data_dir}")
        print(f"sending {source.name} (real abdominal CT slice from pydicom-data) by C-STORE ...")
        code = send_file(source, "127.0.0.1", settings.port, "AINODE")
        print(f"C-STORE status 0x{code:04X}")
        deadline = time.monotonic() + timeout_s
        job = None
        while time.monotonic() < deadline:
            jobs = node.database.list_jobs(limit=1)
            if jobs and jobs[0].state in (JobState.DONE, JobState.FAILED, JobState.IGNORED):
                job = node.database.get_job(jobs[0].id)
                break
            time.sleep(0.5)
        if job is None:
            print("the job did not finish in time", file=sys.stderr)
            return 1
        print(f"job {job.id}: {job.state} — protocol {job.protocol} ({job.routing_reason})")
        if job.algorithm:
            print(f"algorithm: {job.algorithm}")
        if job.results_json:
            results = json.loads(job.results_json)
            print("measurements:")
            for key, label in HEADLINE_RESULTS:
                if key in results:
                    value = results[key]
                    shown = f"{value:.2f}" if isinstance(value, float) else value
                    print(f"  {label:<38} {shown}")
            print(f"  (all {len(results)} values: ainode jobs show {job.id} --data-dir ...)")
        for event in job.events:
            if event.level != "info":
                print(f"  {event.level}: {event.message}")
        if job.state != JobState.DONE:
            print(f"job failed: {job.error}", file=sys.stderr)
            return 1
        expected = {o.sop_instance_uid for o in job.outputs}
        received = pacs.wait_for_instances(
            len(expected), timeout_s=30, predicate=lambda i: i["SOPInstanceUID"] in expected
        )
        print(f"the PACS ({pacs_kind}) now holds:")
        for instance in received:
            kind = SOP_CLASS_NAMES.get(instance["SOPClassUID"], instance["SOPClassUID"])
            print(
                f"  {kind:<3} SOP Instance UID {instance['SOPInstanceUID']} in series "
                f"{instance['SeriesInstanceUID']} of study {instance['StudyInstanceUID']}"
            )
        status = 0 if {i["SOPInstanceUID"] for i in received} >= expected else 1
    if owns_dir and not keep:
        shutil.rmtree(root, ignore_errors=True)
    elif keep or not owns_dir:
        print(f"work directory kept: {root}")
    return status
