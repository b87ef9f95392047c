"""The DICOM peers used by the demo and the tests: Orthanc, the in-process SCP, DCMTK helpers."""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    Comprehensive3DSRStorage,
    CTImageStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
    Verification,
)

from node.local_pacs import INSTANCE_KEYS, InProcessStorageSCP, OrthancPACS, PeerError
from peers import echoscu, require_binary, storescu, write_dcmtk_readable_copy

CT_SOP_INSTANCE_UID = "1.2.826.0.1.3680043.2.1125.1.8828356712501776637392831168989589"


def _minimal_dataset(sop_class_uid: str, modality: str) -> Dataset:
    """A dataset with only the identifying attributes a PACS indexes (no pixel data)."""
    dataset = Dataset()
    dataset.SOPClassUID = sop_class_uid
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.PatientID = "AINODE-TEST"
    dataset.Modality = modality
    dataset.SeriesDescription = f"ainode peer test {modality}"
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ------------------------------------------------------------------------------------ Orthanc


@pytest.mark.peers
def test_orthanc_starts_with_generated_config(orthanc_module: OrthancPACS) -> None:
    orthanc = orthanc_module
    system = orthanc.system()
    assert system["DicomAet"] == "ORTHANC" == orthanc.ae_title
    assert system["DicomPort"] == orthanc.port
    assert system["HttpPort"] == orthanc.http_port
    assert orthanc.http_url == f"http://127.0.0.1:{orthanc.http_port}"
    # "Plugins": [] -> none of Debian's plugins (ModalityWorklists, ServeFolders in
    # /usr/share/orthanc/plugins, configured by /etc/orthanc) is loaded; "explorer.js" is the
    # built-in Orthanc Explorer extension point that /plugins always lists.
    assert set(orthanc._get_json("/plugins")) <= {"explorer.js"}


@pytest.mark.peers
def test_echoscu_to_orthanc(orthanc_module: OrthancPACS, free_port: int) -> None:
    orthanc = orthanc_module
    result = echoscu(orthanc.host, orthanc.port, orthanc.ae_title)
    assert result.returncode == 0, result.stderr
    # The same call against a port where nothing listens must fail.
    refused = echoscu("127.0.0.1", free_port, orthanc.ae_title, extra_args=["-to", "2"])
    assert refused.returncode != 0


@pytest.mark.peers
def test_storescu_refuses_ct_with_un_uids(orthanc: OrthancPACS, real_ct_slice_path: Path) -> None:
    """DCMTK 3.6.7 cannot find SOP Class/Instance UIDs stored as VR UN: the reason for the copy."""
    result = storescu(orthanc.host, orthanc.port, orthanc.ae_title, [real_ct_slice_path])
    assert result.returncode != 0
    assert "No SOP Class or Instance UID" in result.stderr
    assert orthanc.instances() == []


@pytest.mark.peers
def test_storescu_sends_real_ct_slice_as_jpeg2000(
    orthanc: OrthancPACS, real_ct_slice_path: Path, tmp_path: Path
) -> None:
    copy = write_dcmtk_readable_copy(real_ct_slice_path, tmp_path / "ct.dcm")
    result = storescu(orthanc.host, orthanc.port, orthanc.ae_title, [copy],
                      calling_aet="CT_SCANNER")
    assert result.returncode == 0, result.stderr
    assert "-xv" in result.args[0]  # JPEG 2000 lossless proposed, not transcoded

    (instance,) = orthanc.wait_for_instances(1, timeout_s=20)
    assert set(instance) == set(INSTANCE_KEYS)
    assert instance["SOPInstanceUID"] == CT_SOP_INSTANCE_UID
    assert instance["SOPClassUID"] == CTImageStorage
    assert instance["Modality"] == "CT"
    assert instance["TransferSyntaxUID"] == JPEG2000Lossless
    assert instance["CallingAETitle"] == "CT_SCANNER"

    original = pydicom.dcmread(real_ct_slice_path)
    stored = pydicom.dcmread(io.BytesIO(orthanc.get_instance_file(instance["ID"])))
    assert stored.SeriesInstanceUID == original.SeriesInstanceUID == instance["SeriesInstanceUID"]
    assert stored.StudyInstanceUID == original.StudyInstanceUID == instance["StudyInstanceUID"]
    # Lossless round trip: every decoded pixel identical.
    np.testing.assert_array_equal(stored.pixel_array, original.pixel_array)


@pytest.mark.peers
def test_storescu_sends_directory(
    orthanc_module: OrthancPACS, real_ct_slice_dcmtk_path: Path, real_chest_cr_path: Path,
    tmp_path: Path,
) -> None:
    orthanc = orthanc_module  # shared: select this test's instances by SOP Instance UID
    folder = tmp_path / "to_send" / "nested"
    folder.mkdir(parents=True)
    (folder / "ct.dcm").write_bytes(real_ct_slice_dcmtk_path.read_bytes())
    (folder / "cr.dcm").write_bytes(real_chest_cr_path.read_bytes())
    (folder / "README.txt").write_text("not DICOM, skipped")

    result = storescu(orthanc.host, orthanc.port, orthanc.ae_title, [tmp_path / "to_send"])
    assert result.returncode == 0, result.stderr
    assert len(result.args) == 2  # one storescu run per transfer syntax

    cr_uid = pydicom.dcmread(real_chest_cr_path, stop_before_pixels=True).SOPInstanceUID
    sent = {CT_SOP_INSTANCE_UID, cr_uid}
    instances = orthanc.wait_for_instances(2, timeout_s=20,
                                           predicate=lambda i: i["SOPInstanceUID"] in sent)
    by_uid = {i["SOPInstanceUID"]: i for i in instances}
    assert set(by_uid) == {CT_SOP_INSTANCE_UID, cr_uid}
    assert by_uid[cr_uid]["Modality"] == "CR"
    assert by_uid[cr_uid]["TransferSyntaxUID"] == ExplicitVRLittleEndian
    only_cr = orthanc.wait_for_instances(
        1, timeout_s=5, predicate=lambda i: i["Modality"] == "CR" and i["SOPInstanceUID"] in sent
    )
    assert [i["SOPInstanceUID"] for i in only_cr] == [cr_uid]


@pytest.mark.peers
def test_orthanc_stores_seg_sr_and_secondary_capture(orthanc_module: OrthancPACS) -> None:
    """The SOP classes of ainode's results are accepted (Segmentation, Comprehensive 3D SR, SC)."""
    orthanc = orthanc_module
    expected = {
        SegmentationStorage: "SEG",
        Comprehensive3DSRStorage: "SR",
        SecondaryCaptureImageStorage: "OT",
    }
    ae = AE(ae_title="AINODE")
    for sop_class in expected:
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    datasets = [_minimal_dataset(uid, modality) for uid, modality in expected.items()]
    assoc = ae.associate(orthanc.host, orthanc.port, ae_title=orthanc.ae_title)
    assert assoc.is_established
    try:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        assert accepted == set(expected)
        statuses = [assoc.send_c_store(dataset).Status for dataset in datasets]
    finally:
        assoc.release()
    assert statuses == [0x0000] * 3

    sent = {d.SOPInstanceUID for d in datasets}
    instances = orthanc.wait_for_instances(3, timeout_s=20,
                                           predicate=lambda i: i["SOPInstanceUID"] in sent)
    stored = {i["SOPInstanceUID"]: (i["SOPClassUID"], i["Modality"]) for i in instances}
    assert stored == {d.SOPInstanceUID: (d.SOPClassUID, d.Modality) for d in datasets}


@pytest.mark.peers
def test_orthanc_stop_leaves_no_process(tmp_path: Path) -> None:
    require_binary("Orthanc")
    pacs = OrthancPACS(tmp_path / "pacs", ae_title="STOPTEST")
    with pacs:
        pid = pacs.pid
        assert pid is not None and _pid_alive(pid)
        dicom_port = pacs.port
    assert not pacs.is_running()
    assert not _pid_alive(pid)
    # Its DICOM port is free again.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", dicom_port))
    assert "Orthanc has stopped" in pacs.log_path.read_text()


@pytest.mark.peers
def test_orthanc_temporary_work_dir_is_removed() -> None:
    require_binary("Orthanc")
    with OrthancPACS() as pacs:
        work_dir = pacs.work_dir
        assert work_dir is not None and (work_dir / "orthanc.json").is_file()
    assert not work_dir.exists()


@pytest.mark.peers
def test_orthanc_start_failure_reports_log(tmp_path: Path) -> None:
    require_binary("Orthanc")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        taken_port = busy.getsockname()[1]
        pacs = OrthancPACS(tmp_path / "pacs", dicom_port=taken_port, startup_timeout_s=15)
        with pytest.raises(PeerError, match="Orthanc exited") as raised:
            pacs.start()
    assert str(pacs.log_path) in str(raised.value)
    assert not pacs.is_running()


def test_orthanc_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    pacs = OrthancPACS(tmp_path / "pacs", binary=str(tmp_path / "no-such-Orthanc"))
    with pytest.raises(PeerError, match="not installed"):
        pacs.start()


# --------------------------------------------------------------------------- in-process SCP


def test_in_process_scp_stores_pynetdicom_c_store(
    in_process_scp: InProcessStorageSCP, real_ct_slice_path: Path
) -> None:
    original = pydicom.dcmread(real_ct_slice_path)
    ae = AE(ae_title="AINODE")
    ae.add_requested_context(CTImageStorage, JPEG2000Lossless)  # sent as is, no transcoding
    ae.add_requested_context(Verification)
    assoc = ae.associate(in_process_scp.host, in_process_scp.port, ae_title="ANYTHING")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        assert assoc.send_c_store(original).Status == 0x0000
    finally:
        assoc.release()

    (instance,) = in_process_scp.wait_for_instances(1, timeout_s=10)
    assert set(instance) == set(INSTANCE_KEYS)
    assert instance["SOPInstanceUID"] == CT_SOP_INSTANCE_UID
    assert instance["SOPClassUID"] == CTImageStorage
    assert instance["SeriesInstanceUID"] == original.SeriesInstanceUID
    assert instance["StudyInstanceUID"] == original.StudyInstanceUID
    assert instance["Modality"] == "CT"
    assert instance["TransferSyntaxUID"] == JPEG2000Lossless
    assert instance["CallingAETitle"] == "AINODE"
    assert Path(instance["ID"]).parent == in_process_scp.storage_dir

    stored = pydicom.dcmread(io.BytesIO(in_process_scp.get_instance_file(instance["ID"])))
    np.testing.assert_array_equal(stored.pixel_array, original.pixel_array)


def test_in_process_scp_accepts_result_sop_classes(in_process_scp: InProcessStorageSCP) -> None:
    datasets = [
        _minimal_dataset(SegmentationStorage, "SEG"),
        _minimal_dataset(Comprehensive3DSRStorage, "SR"),
        _minimal_dataset(SecondaryCaptureImageStorage, "OT"),
    ]
    ae = AE(ae_title="AINODE")
    for dataset in datasets:
        ae.add_requested_context(dataset.SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate(in_process_scp.host, in_process_scp.port)
    assert assoc.is_established
    try:
        statuses = [assoc.send_c_store(dataset).Status for dataset in datasets]
    finally:
        assoc.release()
    assert statuses == [0x0000] * 3
    seg_only = in_process_scp.wait_for_instances(1, timeout_s=10,
                                                 predicate=lambda i: i["Modality"] == "SEG")
    assert [i["SOPInstanceUID"] for i in seg_only] == [datasets[0].SOPInstanceUID]
    assert len(in_process_scp.instances()) == 3


@pytest.mark.peers
def test_storescu_to_in_process_scp(
    in_process_scp: InProcessStorageSCP, real_chest_cr_path: Path
) -> None:
    result = storescu(in_process_scp.host, in_process_scp.port, in_process_scp.ae_title,
                      [real_chest_cr_path], calling_aet="CR_ROOM")
    assert result.returncode == 0, result.stderr
    (instance,) = in_process_scp.wait_for_instances(1, timeout_s=10)
    original = pydicom.dcmread(real_chest_cr_path)
    assert instance["SOPInstanceUID"] == original.SOPInstanceUID
    assert instance["CallingAETitle"] == "CR_ROOM"
    stored = pydicom.dcmread(io.BytesIO(in_process_scp.get_instance_file(instance["ID"])))
    np.testing.assert_array_equal(stored.pixel_array, original.pixel_array)


def test_in_process_scp_wait_times_out_and_stop_frees_port(tmp_path: Path) -> None:
    scp = InProcessStorageSCP(tmp_path / "scp").start()
    port = scp.port
    assert port > 0
    with pytest.raises(TimeoutError, match="0 matching instance"):
        scp.wait_for_instances(1, timeout_s=0.3)
    with pytest.raises(Exception, match="not a file received"):
        scp.get_instance_file(str(tmp_path / "elsewhere.dcm"))
    scp.stop()
    ae = AE()
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 2
    assoc = ae.associate("127.0.0.1", port)
    assert not assoc.is_established


# ------------------------------------------------------------------------------ DCMTK helpers


def test_require_binary_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = "ainode-no-such-binary"
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        require_binary(missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="scripts/setup.sh"):
        require_binary(missing)
    assert require_binary("sh").endswith("/sh")
