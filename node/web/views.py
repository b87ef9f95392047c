"""Jobs as the dashboard and the API show them: plain dicts, with PHI masked by role.

The job database holds no patient name or Patient ID. For users with the ``phi`` role the job page
reads them (and the Accession Number) from the header of the first stored instance of the
series; for everyone else they, and the Accession Number stored with the job, are hidden, and
header values quoted in free text (routing reason, timeline, error) after the name of a
PHI-bearing attribute (PS3.15 Table E.1-1: descriptions, names, IDs, dates, institution,
physicians, comments) are replaced by ``[hidden]`` (:func:`redact_phi`).
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

from node.users import CurrentUser
from storage.models import Job

logger = logging.getLogger(__name__)

THUMBNAIL_MAX_PX = 480
HIDDEN = None
REDACTED = "[hidden]"

#: Attributes of PS3.15 Table E.1-1 whose values may appear quoted in messages (as routing
#: writes them: ``Series Description 'CHEST ...'``).
PHI_ATTRIBUTE_NAMES = (
    "Study Description", "Series Description", "Protocol Name", "Patient's Name", "Patient Name",
    "Patient ID", "Other Patient IDs", "Patient's Birth Date", "Patient's Age", "Patient's Sex",
    "Accession Number", "Study ID", "Institution Name", "Institution Address",
    "Institutional Department Name", "Referring Physician's Name",
    "Performing Physician's Name", "Name of Physician(s) Reading Study", "Operators' Name",
    "Requesting Physician", "Requested Procedure Description",
    "Performed Procedure Step Description", "Admitting Diagnoses Description", "Image Comments",
    "Study Comments", "Additional Patient History", "Station Name", "Device Serial Number",
    "Study Date", "Series Date", "Acquisition Date", "Content Date", "Study Time",
    "Series Time", "Acquisition Time", "Content Time",
)
_PHI_VALUE = re.compile(
    r"(?P<label>\b(?:" + "|".join(re.escape(n) for n in PHI_ATTRIBUTE_NAMES) + r"))"
    r"(?P<sep>\s*(?:\(\w{4},\w{4}\))?\s*[:=]?\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")",
    re.IGNORECASE,
)


def redact_phi(text: str | None) -> str | None:
    """``text`` with quoted values of PHI-bearing attributes replaced by :data:`REDACTED`.

    Parameters
    ----------
    text:
        A message such as a routing reason: ``... Series Description 'JOHN DOE CHEST' does not
        match '(?i)abdomen'`` becomes ``... Series Description [hidden] does not match ...``
        (the rule's own pattern is configuration, not patient data, and stays).

    Returns
    -------
    str or None
        The redacted text (``None`` stays ``None``).
    """
    if not text:
        return text
    return _PHI_VALUE.sub(lambda m: f"{m['label']}{m['sep']}{REDACTED}", text)


def iso(value: dt.datetime | None) -> str | None:
    """Naive UTC datetime as ISO 8601 with ``Z``."""
    return value.isoformat(timespec="seconds") + "Z" if value else None


def job_summary(job: Job, user: CurrentUser) -> dict[str, Any]:
    """The list view of a job (no PHI unless the user has the phi role)."""
    duration = (
        (job.finished_at - job.started_at).total_seconds()
        if job.finished_at and job.started_at
        else None
    )
    return {
        "id": job.id,
        "state": str(job.state),
        "protocol": job.protocol,
        "modality": job.modality,
        "calling_ae_title": job.calling_ae_title,
        "study_instance_uid": job.study_instance_uid,
        "series_instance_uid": job.series_instance_uid,
        "accession_number": (job.accession_number or None) if user.sees_phi else HIDDEN,
        "instances": job.instance_count,
        "attempts": job.attempts,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "duration_s": round(duration, 1) if duration is not None else None,
        "error": job.error if user.sees_phi else redact_phi(job.error),
    }


def job_detail(job: Job, user: CurrentUser, database: Any) -> dict[str, Any]:
    """The job page / API detail: summary plus routing, results, outputs, sends, timeline."""
    data = job_summary(job, user)
    shown = (lambda text: text) if user.sees_phi else redact_phi
    data.update(
        routing_rule=job.routing_rule,
        routing_reason=shown(job.routing_reason),
        algorithm=job.algorithm,
        worker=job.worker,
        lease_expires_at=iso(job.lease_expires_at),
        results=json.loads(job.results_json) if job.results_json else None,
        outputs=[
            {
                "id": o.id,
                "kind": o.kind,
                "sop_class_uid": o.sop_class_uid,
                "sop_instance_uid": o.sop_instance_uid,
                "series_instance_uid": o.series_instance_uid,
                "created_at": iso(o.created_at),
                "sends": [
                    {
                        "destination": s.destination,
                        "state": str(s.state),
                        "attempts": s.attempts,
                        "last_error": s.last_error,
                        "sent_at": iso(s.sent_at),
                    }
                    for s in o.sends
                ],
            }
            for o in job.outputs
        ],
        events=[
            {"at": iso(e.at), "level": e.level, "message": shown(e.message)} for e in job.events
        ],
        patient=patient_of(job, database) if user.sees_phi else HIDDEN,
        phi_hidden=not user.sees_phi,
        priority=("urgent", "routine", "low")[job.priority] if job.priority in (0, 1, 2) else None,
        queue=_queue_place(job, database),
        study_series=[
            {
                "job": other.id,
                "state": str(other.state),
                "series_instance_uid": other.series_instance_uid,
                "reason": shown(other.routing_reason or other.error or ""),
            }
            # the latest job of every series of the study (completion: study, docs/routing.md)
            for other in {o.series_instance_uid: o for o in database.study_jobs(job.study_instance_uid)}.values()
        ],
    )
    return data


def _queue_place(job: Job, database: Any) -> dict[str, Any] | None:
    """A queued job's projected place and wait (``None`` otherwise); see
    :meth:`storage.dashboard_queries.DashboardQueries.queue_places`."""
    if str(job.state) != "queued":
        return None
    place = database.queue_places([job.id]).get(job.id)
    if place is None:
        return None
    wait = place.waiting_seconds
    return {"position": place.position, "queued": place.queued, "priority": place.priority,
            "waiting_s": None if wait is None else round(wait, 1)}


def patient_of(job: Job, database: Any) -> dict[str, str | None]:
    """Patient name, Patient ID and Accession Number from the first stored instance's header.

    Never logged. Values are ``None`` when the files are gone (retention) or unreadable.
    """
    import pydicom

    instances = database.series_instances(job.series_instance_uid)
    for instance in instances[:3]:
        try:
            ds = pydicom.dcmread(
                instance.path,
                stop_before_pixels=True,
                specific_tags=["PatientName", "PatientID", "AccessionNumber"],
            )
        except Exception:  # noqa: BLE001, S112 - a missing/unreadable file only hides the values
            continue
        return {
            "name": str(ds.get("PatientName", "")) or None,
            "id": str(ds.get("PatientID", "")) or None,
            "accession_number": str(ds.get("AccessionNumber", "")) or None,
            "source": "stored instance header",
        }
    return {"name": None, "id": None, "accession_number": job.accession_number or None,
            "source": "no stored instance readable from the dashboard host"}


def source_has_burned_in_annotation(job: Job, database: Any) -> bool:
    """Whether the job's first readable source instance declares Burned In Annotation YES.

    ainode's key images burn in only measurements and the algorithm name (the SC itself says
    ``BurnedInAnnotation YES`` for that text), but they copy the source pixels: a source image
    with burned-in patient data would carry it into the key image.
    """
    import pydicom

    for instance in database.series_instances(job.series_instance_uid)[:3]:
        try:
            ds = pydicom.dcmread(instance.path, stop_before_pixels=True,
                                 specific_tags=["BurnedInAnnotation"])
        except Exception:  # noqa: BLE001, S112 - unreadable: try the next one
            continue
        return str(ds.get("BurnedInAnnotation", "")).upper() == "YES"
    return False


@functools.lru_cache(maxsize=64)
def _thumbnail_png(path: str, mtime_ns: int) -> bytes:
    import numpy as np
    import pydicom
    from PIL import Image

    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    if str(ds.get("PhotometricInterpretation", "")).startswith("YBR"):
        from pydicom.pixels import convert_color_space

        pixels = convert_color_space(pixels, ds.PhotometricInterpretation, "RGB")
    if pixels.ndim == 4:
        pixels = pixels[0]
    if pixels.dtype != np.uint8:
        low, high = float(pixels.min()), float(pixels.max())
        pixels = ((pixels - low) / max(high - low, 1.0) * 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    image.thumbnail((THUMBNAIL_MAX_PX, THUMBNAIL_MAX_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def thumbnail_png(path: str) -> bytes:
    """PNG thumbnail (at most 480 px) of a Secondary Capture key image file (cached).

    Raises
    ------
    OSError
        If the file cannot be read from the dashboard host.
    """
    stat = Path(path).stat()
    return _thumbnail_png(path, stat.st_mtime_ns)
