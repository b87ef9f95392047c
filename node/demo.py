"""``ainode demo``: a real abdominal CT slice through a node and back to a local PACS.

Starts a local PACS (Orthanc when installed, otherwise an in-process Storage SCP), starts a node
that sends its results there, sends the real CT slice from the PyPI package ``pydicom-data``
(``explicit_VR-UN.dcm``: JPEG 2000 lossless, elements stored with VR UN, at about L1-L2) by C-STORE,
waits for the job, and prints the measurements and the SEG, SR and SC the PACS received.

What a person reads goes to standard output: measurements by name with units
(:mod:`node.presentation`), commands with real paths. Log lines of the node, its job process and
the libraries (e.g. highdicom's warnings while writing the SEG) go to ``demo.log`` in the work
directory, which is deleted at the end unless ``--keep`` (or ``--work-dir``) is given.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TextIO

from ainode_core.errors import AINodeError
from node.presentation import measurement_lines, render_lines

DEMO_FILE = "explicit_VR-UN.dcm"
LOG_NAME = "demo.log"
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


@contextmanager
def logs_to_file(path: Path) -> Iterator[TextIO]:
    """Send everything written to file descriptor 2 (logging, job processes) to ``path``.

    Job processes inherit the descriptor, so their log lines land in the file too. Yields a text
    stream on the original standard error for messages meant for the person running the demo;
    the descriptor is restored on exit.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    user_stderr = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        yield user_stderr
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        user_stderr.close()


def run_demo(
    work_dir: Path | None = None,
    keep: bool = False,
    timeout_s: float = 300.0,
    pacs_kind: str = "auto",
    log_to_file: bool = True,
) -> int:
    """Run the demo; prints the results and returns an exit status (0 = the PACS got all three).

    Parameters
    ----------
    work_dir : Path, optional
        Directory for the node's data, the PACS and ``demo.log``; default a temporary directory
        deleted at the end (unless ``keep``). A given directory is always kept.
    keep : bool
        Keep the temporary work directory (to run ``ainode jobs show`` on it afterwards).
    timeout_s : float
        Longest wait for the job, in seconds.
    pacs_kind : str
        ``"orthanc"``, ``"builtin"`` (in-process Storage SCP) or ``"auto"`` (Orthanc when
        installed).
    log_to_file : bool
        Send log lines (node, job process, libraries) to ``demo.log`` in the work directory
        instead of the terminal (``ainode demo --verbose`` turns this off).
    """
    owns_dir = work_dir is None
    root = Path(tempfile.mkdtemp(prefix="ainode-demo-")) if work_dir is None else work_dir
    root.mkdir(parents=True, exist_ok=True)
    kept = keep or not owns_dir
    with ExitStack() as stack:
        err = stack.enter_context(logs_to_file(root / LOG_NAME)) if log_to_file else sys.stderr
        status = _run(root, kept, timeout_s, pacs_kind, err)
    if kept:
        print(f"work directory kept: {root}" + (f" (log: {root / LOG_NAME})" if log_to_file else ""))
    else:
        shutil.rmtree(root, ignore_errors=True)
        print(f"work directory {root} deleted; keep it (node data, PACS, {LOG_NAME}) with "
              "`ainode demo --keep`")
    return status


def _run(root: Path, kept: bool, timeout_s: float, pacs_kind: str, err: TextIO) -> int:
    """The demo itself in ``root``; user messages to stdout, problems to ``err``."""
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
        print(f"sending {source.name} (real abdominal CT slice from pydicom-data) by C-STORE")
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
            print(f"the job did not finish in {timeout_s:.0f} s; see {root / LOG_NAME}", file=err)
            return 1
        protocol = job.protocol or "no protocol"
        print(f"job {job.id}: {job.state} — {protocol}" + (f" ({job.routing_reason})" if job.routing_reason else ""))
        if job.algorithm:
            print(f"algorithm: {job.algorithm}")
        if job.results_json:
            results = json.loads(job.results_json)
            print("measurements:")
            print("\n".join(render_lines(measurement_lines(job.protocol, results), indent="  ")))
            show = f"ainode jobs show {job.id} --json --data-dir {settings.data_dir}"
            if kept:
                print(f"  (all {len(results)} stored values: {show})")
            else:
                print(f"  (all {len(results)} stored values: run `ainode demo --keep`, then the "
                      "`ainode jobs show` command it prints)")
        for event in job.events:
            if event.level != "info":
                print(f"  {event.level}: {event.message}")
        if job.state != JobState.DONE:
            print(f"job failed: {job.error}", file=err)
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
        return 0 if {i["SOPInstanceUID"] for i in received} >= expected else 1
