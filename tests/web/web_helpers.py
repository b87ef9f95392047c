"""Helpers of the dashboard tests: jobs in the database, DICOM files with patient data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from storage.database import JobDatabase

#: Test users: alice (admin), victor (viewer), paula (viewer + phi).
PASSWORDS = {"alice": "alice-admin-pw", "victor": "victor-viewer-pw", "paula": "paula-phi-pw1"}
ROLES = {"alice": ["admin"], "victor": ["viewer"], "paula": ["viewer", "phi"]}


def sign_in(client: Any, user: str) -> None:
    """Sign a TestClient in through the login form (CSRF token taken from the form)."""
    form = client.get("/login")
    token = form.text.split('name="csrf_token" value="')[1].split('"')[0]
    response = client.post(
        "/login",
        data={"username": user, "password": PASSWORDS[user], "csrf_token": token, "next": "/jobs"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text


def record(
    db: JobDatabase,
    series: str,
    sop: str | None = None,
    *,
    path: str = "/nonexistent.dcm",
    calling: str = "PACS",
    accession: str = "",
    at: dt.datetime | None = None,
) -> None:
    """Record one instance of ``series`` (study ``1.2``)."""
    db.record_instance(
        sop_instance_uid=sop or f"{series}.1",
        study_instance_uid="1.2",
        series_instance_uid=series,
        sop_class_uid=CTImageStorage,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        modality="CT",
        path=path,
        calling_ae_title=calling,
        received_at=at,
        accession_number=accession,
    )


def queued_job(db: JobDatabase, series: str, protocol: str = "l3-body-composition", **kwargs: object) -> int:
    """A job for ``series`` routed to ``protocol`` (state queued)."""
    record(db, series, **kwargs)  # type: ignore[arg-type]
    (job_id,) = db.complete_quiet_series(0)
    db.set_routing(job_id, protocol=protocol, rule="test-rule", reason="routed by the test")
    return job_id


def failed_job(db: JobDatabase, series: str, **kwargs: object) -> int:
    """A job that ran and failed."""
    job_id = queued_job(db, series, **kwargs)
    claimed = db.claim_job("test-worker", 60)
    assert claimed is not None and claimed.id == job_id
    db.fail_job(job_id, "pipeline error: test failure")
    return job_id


def write_ct_file(path: Path, patient_name: str, patient_id: str, accession: str) -> Path:
    """A small valid CT image file with the given patient data (for the PHI tests)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.AccessionNumber = accession
    ds.StudyInstanceUID = "1.2"
    ds.SeriesInstanceUID = "1.2.3"
    ds.Modality = "CT"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.zeros((8, 8), dtype=np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def c_store_dataset(ds: Dataset, port: int, ae_title: str = "AINODE", calling: str = "CT_SCANNER") -> int:
    """C-STORE one dataset to 127.0.0.1:port with pynetdicom; returns the status."""
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    ae.add_requested_context(ds.SOPClassUID, [str(ds.file_meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    assert assoc.is_established, f"association with the node on port {port} failed"
    status = assoc.send_c_store(ds)
    assoc.release()
    return int(status.Status)


def save_small_png(source: Path, target: Path, colours: int = 64) -> Path:
    """Copy a screenshot as a palette PNG (a fraction of the size) for the docs."""
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        image.convert("RGB").quantize(colors=colours).save(target, optimize=True)
    return target


def write_sc_file(path: Path, rgb: np.ndarray) -> Path:
    """A Secondary Capture image file holding an RGB uint8 array (rows, columns, 3)."""
    from pydicom.uid import SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = "RGB"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "YES"
    ds.PixelData = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def job_with_key_image(db: JobDatabase, series: str, source: Path, key_image: Path) -> int:
    """A done job whose source instance is ``source`` and whose SC output is ``key_image``."""
    job_id = queued_job(db, series, path=str(source))
    assert db.claim_job("test-worker", 60).id == job_id  # type: ignore[union-attr]
    db.record_results(
        job_id, algorithm="test 1", results={"sma_cm2": 100.0},
        outputs=[("SC", "1.2.840.10008.5.1.4.1.1.7", generate_uid(), generate_uid(), str(key_image))],
        destinations=[],
    )
    return job_id
