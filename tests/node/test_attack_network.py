"""The node under attack, on loopback only, bounded in count and time (issue 14 items 1, 2, 7, 8).

* idle sockets: 50 TCP connections from one address that send nothing do not stop an
  allow-listed PACS (DCMTK storescu from another address) from storing; ARTIM closes them;
* allow-list by host: a connection from an address no allowed caller names is closed at accept;
* a burst of 20 associations is accepted in full, the 21st is rejected (only established
  associations count, docs/conformance.md);
* memory bomb: a 2.4 KB RLE file claiming 65535 x 65535 pixels, Modality CT and no Body Part
  Examined, sent with storescu, leaves ``ainode serve`` under 500 MB resident and C-ECHO
  (echoscu) under 1 s while it is routed; the job says why it was refused;
* kill -9 during ingest with 4 concurrent storescu associations: every instance storescu saw
  acknowledged is on disk and in the job database after the restart.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from node_helpers import c_echo
from pynetdicom import AE

from node.config import AllowedCaller
from storage.database import JobDatabase

VERIFICATION = "1.2.840.10008.1.1"


def _idle_socket(port: int, source: str) -> socket.socket:
    """A TCP connection to 127.0.0.1:port from ``source`` that will send nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    return sock


def _closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    """Whether the node closes ``sock`` (EOF or reset) within ``within_s`` seconds."""
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.peers
@pytest.mark.slow
def test_idle_sockets_do_not_lock_out_an_allow_listed_pacs(
    make_node: Any, real_ct_slice_dcmtk_path: Path
) -> None:
    from peers import storescu

    node = make_node(
        allowed_callers=[AllowedCaller(ae_title="STORESCU")],
        association_request_timeout_seconds=2.0,
    )
    port = node.scp.port
    idle = [_idle_socket(port, "127.0.0.2") for _ in range(50)]
    try:
        time.sleep(0.3)
        # More than max_connections_per_ip from 127.0.0.2 are closed at accept.
        let_in = node.scp.admission.open_connections("127.0.0.2")
        assert let_in <= node.settings.max_connections_per_ip
        started = time.monotonic()
        result = storescu("127.0.0.1", port, "AINODE", [real_ct_slice_dcmtk_path])
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stdout + result.stderr
        assert elapsed < 5, f"storescu took {elapsed:.1f} s beside 50 idle sockets"
        # ARTIM (2 s here) closes every idle socket that was let in.
        deadline = time.monotonic() + 8
        still_open = [
            s for s in idle if not _closed_by_peer(s, max(0.05, deadline - time.monotonic()))
        ]
        assert still_open == [], f"{len(still_open)} idle socket(s) still open after ARTIM"
    finally:
        for sock in idle:
            sock.close()
    assert node.scp.counters.instances_stored == 1


def test_allow_list_with_hosts_closes_other_addresses_at_accept(make_node: Any) -> None:
    node = make_node(allowed_callers=[AllowedCaller(ae_title="TESTSCU", host="127.0.0.1")])
    sock = _idle_socket(node.scp.port, "127.0.0.2")
    try:
        started = time.monotonic()
        assert _closed_by_peer(sock, 3.0)
        assert time.monotonic() - started < 1.0  # at accept, not after ARTIM
    finally:
        sock.close()
    assert c_echo(node.scp.port) == 0  # the allowed host still gets in


def test_burst_of_20_associations_is_accepted_and_the_21st_refused(make_node: Any) -> None:
    node = make_node(max_associations=20)
    port = node.scp.port
    results: list[Any] = [None] * 20
    all_in = threading.Barrier(21)

    def associate(index: int) -> None:
        ae = AE(ae_title=f"BURST{index}")
        ae.add_requested_context(VERIFICATION)
        ae.acse_timeout = ae.network_timeout = 10
        assoc = ae.associate("127.0.0.1", port, ae_title="AINODE")
        results[index] = assoc
        try:
            all_in.wait(timeout=30)
        except threading.BrokenBarrierError:
            pass

    threads = [threading.Thread(target=associate, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    try:
        all_in.wait(timeout=30)
        established = sum(1 for a in results if a is not None and a.is_established)
        assert established == 20
        extra = AE(ae_title="BURST21")
        extra.add_requested_context(VERIFICATION)
        extra.acse_timeout = extra.network_timeout = 10
        twenty_first = extra.associate("127.0.0.1", port, ae_title="AINODE")
        assert twenty_first.is_rejected
        # transient, service provider (presentation), local limit exceeded (PS3.8 Table 9-21)
        rejection = twenty_first.acceptor.primitive
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (2, 3, 2)
    finally:
        for thread in threads:
            thread.join(timeout=30)
        for assoc in results:
            if assoc is not None and assoc.is_established:
                assoc.release()
    # Once they are released, the slots are free again.
    deadline = time.monotonic() + 10
    while node.scp.admission.admitted_associations() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert c_echo(port) == 0


def _memory_bomb(path: Path, body_part: str | None = None) -> Path:
    """A ~2.4 KB RLE Lossless CT image whose header claims 65535 x 65535 x 16 bit (8 GiB)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless, generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CT"
    if body_part:
        ds.BodyPartExamined = body_part
    ds.PatientName, ds.PatientID = "BOMB^TEST", "BOMB1"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 1.0
    ds.Rows = ds.Columns = 65535
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    # RLE header: two segments (high and low bytes), each a few replicate runs.
    segment = bytes([0x81, 0x00]) * 500
    header = (2).to_bytes(4, "little") + (64).to_bytes(4, "little")
    header += (64 + len(segment)).to_bytes(4, "little") + bytes(52)
    ds.PixelData = encapsulate([header + segment + segment])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.peers
@pytest.mark.slow
def test_memory_bomb_is_routed_without_decoding_in_the_node(
    serve_process: Any, tmp_path: Path
) -> None:
    from peers import echoscu, require_binary, storescu

    from storage.models import JobState

    require_binary("echoscu")
    bomb = _memory_bomb(tmp_path / "bomb.dcm")
    assert bomb.stat().st_size < 3000
    data_dir = tmp_path / "node"
    node = serve_process(data_dir)
    node.start()
    pid = node.process.pid
    result = storescu("127.0.0.1", node.port, "AINODE", [bomb])
    assert result.returncode == 0, result.stdout + result.stderr
    db = JobDatabase(f"sqlite:///{data_dir / 'ainode.sqlite3'}", migrate_schema=False)
    peak_rss_mb = 0.0
    echo_s: list[float] = []
    try:
        deadline = time.monotonic() + 90
        job = None
        while time.monotonic() < deadline:
            peak_rss_mb = max(peak_rss_mb, _rss_mb(pid))
            started = time.monotonic()
            echo = echoscu("127.0.0.1", node.port, "AINODE", timeout_s=10)
            echo_s.append(time.monotonic() - started)
            assert echo.returncode == 0, echo.stdout + echo.stderr
            jobs = db.list_jobs(limit=5)
            if jobs and jobs[0].state != JobState.RECEIVED:
                job = db.get_job(jobs[0].id)
                break
            time.sleep(0.05)
        assert job is not None, "the job was never routed"
        peak_rss_mb = max(peak_rss_mb, _rss_mb(pid))
    finally:
        db.close()
    assert job.state == JobState.IGNORED, (job.state, job.error, job.routing_reason)
    assert "max_image_mb" in (job.routing_reason or ""), job.routing_reason
    assert peak_rss_mb < 500, f"ainode serve reached {peak_rss_mb:.0f} MB"
    assert max(echo_s) < 1.0, f"C-ECHO took up to {max(echo_s):.2f} s while routing: {echo_s}"
    assert len(echo_s) >= 2  # C-ECHO was measured while the job waited and was routed
    print(f"peak RSS {peak_rss_mb:.0f} MB, C-ECHO max {max(echo_s):.3f} s over {len(echo_s)}")


def test_pixel_routing_child_is_bounded_by_its_memory_limit(tmp_path: Path) -> None:
    """With the size check lifted, the child's RLIMIT_AS still stops the decode, not the node."""
    from node.server import pixel_region_of

    bomb = _memory_bomb(tmp_path / "bomb.dcm")
    before = _rss_mb(os_getpid())
    guess = pixel_region_of([str(bomb)], memory_mb=768, timeout_s=60, max_image_mb=10**6)
    assert guess.regions == ["unknown"]
    assert "over its memory limit of 768 MiB (pixel_routing_memory_mb)" in guess.reason, guess.reason
    assert _rss_mb(os_getpid()) - before < 100


@pytest.mark.slow
def test_job_child_refuses_the_bomb_before_decoding(make_node: Any, tmp_path: Path) -> None:
    """With a Body Part the bomb is routed to a CT protocol; the job child refuses it by size."""
    from node_helpers import c_store, wait_for_jobs

    from storage.models import JobState

    bomb = _memory_bomb(tmp_path / "bomb.dcm", body_part="ABDOMEN")
    node = make_node(max_image_mb=512)
    assert c_store(bomb, node.scp.port, raw=True) == 0
    (job,) = wait_for_jobs(node.database, 1, timeout_s=90)
    assert job.state == JobState.FAILED, (job.state, job.error)
    assert "512 MiB (max_image_mb)" in (job.error or ""), job.error
    assert "8,192 MiB" in (job.error or "")


def os_getpid() -> int:
    import os

    return os.getpid()


def _small_ct_series(directory: Path, count: int) -> list[Path]:
    """``count`` 64 x 64 CT files of one series (fast to send; the path is the same as 512²)."""
    import numpy as np
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    directory.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    pixels = np.arange(64 * 64, dtype=np.uint16).tobytes()
    paths = []
    for index in range(count):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.InstanceNumber = "CT", index + 1
        ds.Rows = ds.Columns = 64
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels
        path = directory / f"{index:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.mark.peers
@pytest.mark.slow
def test_kill9_during_ingest_with_4_associations_loses_nothing_acknowledged(
    serve_process: Any, tmp_path: Path
) -> None:
    import os
    import subprocess

    from peers import require_binary

    storescu_bin = require_binary("storescu")
    data_dir = tmp_path / "node"
    node = serve_process(data_dir)
    node.start()
    groups = [_small_ct_series(tmp_path / f"series{g}", 150) for g in range(4)]
    senders = [
        subprocess.Popen(
            [storescu_bin, "-v", "-aec", "AINODE", "-aet", f"KILL{g}", "-to", "10", "-ta", "10",
             "127.0.0.1", str(node.port), *map(str, files)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for g, files in enumerate(groups)
    ]
    instances = data_dir / "instances"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(instances.rglob("*.dcm"))) < 100:
        time.sleep(0.02)
    node.kill9()  # with its children; the 4 associations are cut mid-stream
    outputs = [sender.communicate(timeout=60)[0] for sender in senders]
    acknowledged: list[str] = []
    for files, output in zip(groups, outputs, strict=True):
        successes = output.count("Received Store Response (Success)")
        # storescu sends its files in order, one at a time: the first `successes` were answered.
        acknowledged += [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                         for p in files[:successes]]
    total = sum(len(g) for g in groups)
    assert 0 < len(acknowledged) < total, "kill -9 must land while the associations run"
    node.start()  # recovery (store scan) runs before the listener answers C-ECHO
    on_disk = {p.stem for p in instances.rglob("*.dcm")}
    db = JobDatabase(f"sqlite:///{data_dir / 'ainode.sqlite3'}", migrate_schema=False)
    try:
        in_db = db.known_sop_instance_uids()
    finally:
        db.close()
    missing_files = [uid for uid in acknowledged if uid not in on_disk]
    missing_rows = [uid for uid in acknowledged if uid not in in_db]
    assert missing_files == [] and missing_rows == [], (
        f"{len(acknowledged)} acknowledged: {len(missing_files)} without file, "
        f"{len(missing_rows)} without row"
    )
    assert not [p for p in instances.rglob("*") if p.name.startswith(".tmp-")]
    print(f"kill -9 after {len(acknowledged)} of {total} acknowledged; all on disk and in the DB "
          f"({len(on_disk)} files, pid {os.getpid()})")


def test_ingest_recorder_commits_batches_with_duplicates(tmp_path: Path) -> None:
    """The recorder's batches (issue 14 item 7): a re-sent instance inside one batch is one row;
    ``drain`` returns only once every submitted record is committed."""
    from node.scp import IngestRecorder
    from storage.database import InstanceRecord
    from storage.models import Series, utcnow

    db = JobDatabase(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    recorder = IngestRecorder(db, linger_seconds=5.0)  # longer than the test: drain must cut it
    recorder.start()
    try:
        def record(sop: str, series: str) -> InstanceRecord:
            return InstanceRecord(
                sop_instance_uid=sop, study_instance_uid="1.2.3", series_instance_uid=series,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                modality="CT", path=f"/x/{sop}.dcm", calling_ae_title="PACS", received_at=utcnow(),
            )

        for sop in ("1.2.3.4.1", "1.2.3.4.2", "1.2.3.4.1", "1.2.3.4.3"):
            recorder.submit(record(sop, "1.2.3.4"))
        started = time.monotonic()
        assert recorder.drain(timeout_s=4.0)
        assert time.monotonic() - started < 4.0
        assert db.known_sop_instance_uids() == {"1.2.3.4.1", "1.2.3.4.2", "1.2.3.4.3"}
        with db.session() as session:
            assert session.get(Series, "1.2.3.4").instance_count == 3
    finally:
        recorder.stop()
        db.close()
