"""STOW-RS origin server: ``POST /dicomweb/studies[/{study}]`` (PS3.18 10.5, Store Transaction).

A PACS or script stores instances on the node by DICOMweb instead of C-STORE. The request is
authenticated like the REST API (HTTP Basic, a session with its CSRF token, or the trusted proxy
header) and needs the ``service`` role (:mod:`node.users`); 401 without credentials, 403 without
the role. The body is ``multipart/related; type="application/dicom"``, one DICOM Part 10 file per
part, parsed as it streams in with python-multipart and bounded by ``web.stow_max_request_mb``
(413 beyond).

Every part is stored with the C-STORE handler's promise (:mod:`node.scp`): its UIDs are checked,
the free-space guard applies, the file is written by
:meth:`storage.instance_store.InstanceStore.store` (temp file, fsync, rename, directory fsync)
and recorded in the job database's instance table before the answer is sent, so the node's
series and study completion treat it exactly as an instance received by C-STORE (the calling AE
title recorded is the account's name, at most 16 characters). If the database refuses the
record, the durable file is registered at the node's next start (:meth:`node.server.Node.recover`).
An image whose declared decoded size exceeds ``max_image_mb`` is refused.

The answer (PS3.18 Table 10.5.3-1, ``application/dicom+json``) lists stored instances in the
Referenced SOP Sequence and refused parts in the Failed SOP Sequence with a Failure Reason:
0xC000 (not a DICOM Part 10 file, or no valid UIDs), 0xA900 (Study Instance UID differs from the
one in the URL), 0xA700 (disk space or storage failure; the sender may retry) or 0xC000 with a log
line for an image above ``max_image_mb``. HTTP status: 200 when every part was stored, 202 when
some were, 409 when none was; 400 for a body without parts, 415 for another media type.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from ainode_core.errors import AINodeError, StorageError
from node.users import CurrentUser
from node.web.auth import csrf_ok, current_user
from storage.database import InstanceRecord
from storage.instance_store import InstanceStore, check_uid
from storage.models import utcnow
from storage.retention import DiskGuard

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"

#: Failure Reasons (PS3.18 Table I.2-1 / PS3.4 Annex B.2).
REASON_OUT_OF_RESOURCES = 0xA700
REASON_STUDY_MISMATCH = 0xA900
REASON_CANNOT_UNDERSTAND = 0xC000


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)


@dataclass
class StowResult:
    """What became of the parts of one request."""

    referenced: list[tuple[str, str]] = field(default_factory=list)
    """(SOP Class UID, SOP Instance UID) of every stored instance."""
    failed: list[tuple[str, str, int]] = field(default_factory=list)
    """(SOP Class UID, SOP Instance UID, Failure Reason) of every refused part (UIDs may be '')."""

    def status_code(self) -> int:
        """200 all stored, 202 some, 409 none (PS3.18 10.5.3)."""
        if not self.failed:
            return 200
        return 202 if self.referenced else 409

    def to_json(self) -> dict[str, Any]:
        """The response dataset in the DICOM JSON model (PS3.18 F.2)."""
        answer = Dataset()
        if self.referenced:
            answer.ReferencedSOPSequence = [
                _item(sop_class_uid, sop_instance_uid)
                for sop_class_uid, sop_instance_uid in self.referenced
            ]
        if self.failed:
            items = []
            for sop_class_uid, sop_instance_uid, reason in self.failed:
                item = _item(sop_class_uid, sop_instance_uid)
                item.FailureReason = reason
                items.append(item)
            answer.FailedSOPSequence = items
        result: dict[str, Any] = answer.to_json_dict()
        return result


def _item(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid or None
    item.ReferencedSOPInstanceUID = sop_instance_uid or None
    return item


async def _read_parts(request: Request, boundary: str, limit_bytes: int) -> list[_Part]:
    """The body's parts, parsed while it streams in; 413 once it grows beyond ``limit_bytes``."""
    parts: list[_Part] = []
    header_field: list[bytes] = []
    header_value: list[bytes] = []

    def on_part_begin() -> None:
        parts.append(_Part())

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].chunks.append(bytes(data[start:end]))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.append(bytes(data[start:end]))

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.append(bytes(data[start:end]))

    def on_header_end() -> None:
        name = b"".join(header_field).decode("latin-1").strip().lower()
        parts[-1].headers[name] = b"".join(header_value).decode("latin-1").strip()
        header_field.clear()
        header_value.clear()

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_part_data": on_part_data,
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end,
    })
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit_bytes:
                raise HTTPException(
                    status_code=413,
                    detail=f"request larger than web.stow_max_request_mb "
                    f"({limit_bytes / 2**20:g} MB): send the study in several requests",
                )
            parser.write(chunk)
        parser.finalize()
    except HTTPException:
        raise
    except Exception as exc:  # python-multipart's MultipartParseError and relatives
        raise HTTPException(status_code=400, detail=f"malformed multipart body: {exc}") from exc
    return parts


class StowStore:
    """Stores the parts of STOW-RS requests like the C-STORE handler does.

    Parameters
    ----------
    request:
        Any request of the app (for its settings and job database).
    """

    def __init__(self, request: Request) -> None:
        settings = request.app.state.settings
        self.settings = settings
        self.database = request.app.state.database
        self.store = InstanceStore(settings.data_dir)
        self.disk_guard = DiskGuard.from_settings(settings.data_dir, settings.retention)
        self.max_image_bytes = int(settings.max_image_mb * 2**20)

    def store_parts(
        self, parts: list[_Part], study_instance_uid: str | None, caller: str
    ) -> StowResult:
        """Store every part durably and record it; what was stored and what was refused."""
        result = StowResult()
        records: list[InstanceRecord] = []
        for number, part in enumerate(parts, start=1):
            media_type = part.headers.get("content-type", "application/dicom").split(";")[0]
            data = b"".join(part.chunks)
            if media_type.strip().lower() != "application/dicom":
                logger.warning("STOW-RS from %s: part %d is %s, not application/dicom",
                               caller, number, media_type[:64])
                result.failed.append(("", "", REASON_CANNOT_UNDERSTAND))
                continue
            try:
                dataset = dcmread(io.BytesIO(data), stop_before_pixels=True)
                sop_class_uid = str(dataset.SOPClassUID)
                sop_instance_uid = str(dataset.SOPInstanceUID)
                study = str(dataset.StudyInstanceUID)
                series = str(dataset.SeriesInstanceUID)
                transfer_syntax_uid = str(dataset.file_meta.TransferSyntaxUID)
                for uid, what in ((study, "Study Instance UID"), (series, "Series Instance UID"),
                                  (sop_instance_uid, "SOP Instance UID")):
                    check_uid(uid, what)
            except (InvalidDicomError, AttributeError, StorageError, ValueError, EOFError,
                    TypeError, KeyError) as exc:
                logger.warning("STOW-RS from %s: part %d is not a DICOM Part 10 file with valid "
                               "UIDs (%s)", caller, number, exc)
                result.failed.append(("", "", REASON_CANNOT_UNDERSTAND))
                continue
            if study_instance_uid is not None and study != study_instance_uid:
                logger.warning("STOW-RS from %s: %s belongs to another study than the URL's",
                               caller, sop_instance_uid)
                result.failed.append((sop_class_uid, sop_instance_uid, REASON_STUDY_MISMATCH))
                continue
            reason = self._refusal(dataset, caller)
            if reason is not None:
                result.failed.append((sop_class_uid, sop_instance_uid, reason))
                continue
            try:
                stored = self.store.store(study, series, sop_instance_uid, data)
            except StorageError as exc:
                logger.error("STOW-RS %s from %s: %s", sop_instance_uid, caller, exc)
                result.failed.append((sop_class_uid, sop_instance_uid, REASON_OUT_OF_RESOURCES))
                continue
            records.append(InstanceRecord(
                sop_instance_uid=sop_instance_uid,
                study_instance_uid=study,
                series_instance_uid=series,
                sop_class_uid=sop_class_uid,
                transfer_syntax_uid=transfer_syntax_uid,
                modality=str(dataset.get("Modality", ""))[:16],
                path=str(stored.path),
                calling_ae_title=caller,
                received_at=utcnow(),
                accession_number=str(dataset.get("AccessionNumber", "") or "")[:16],
            ))
            result.referenced.append((sop_class_uid, sop_instance_uid))
        if records:
            try:
                self.database.record_instances(records)
            except StorageError as exc:
                # The files are durable; the node registers them at its next start (recover).
                logger.error("STOW-RS from %s: %d stored instance(s) not recorded in the job "
                             "database (%s); they are registered at the next start",
                             caller, len(records), exc)
        return result

    def _refusal(self, dataset: Dataset, caller: str) -> int | None:
        from pipelines.volume import check_image_size

        shortage = self.disk_guard.shortage()
        if shortage is not None:
            logger.error("STOW-RS from %s refused: %s", caller, shortage)
            return REASON_OUT_OF_RESOURCES
        try:
            check_image_size(dataset, self.max_image_bytes)
        except AINodeError as exc:
            logger.error("STOW-RS from %s refused: %s", caller, exc)
            return REASON_CANNOT_UNDERSTAND
        return None


def _storing_user(request: Request) -> CurrentUser:
    user = current_user(request, allow_basic=True)
    if user is None:
        raise HTTPException(status_code=401,
                            detail="authentication required (HTTP Basic or session)")
    if not user.may_store:
        raise HTTPException(status_code=403, detail="storing by STOW-RS needs the service role")
    if user.via in ("session", "proxy") and not csrf_ok(request, None):
        raise HTTPException(status_code=403, detail="missing or wrong X-CSRF-Token header "
                            "(see GET /api/v1/me)")
    return user


def build_dicomweb_router() -> APIRouter:
    """The STOW-RS routes (``/dicomweb/studies`` and ``/dicomweb/studies/{study}``)."""
    router = APIRouter(prefix="/dicomweb", tags=["DICOMweb"])

    async def stow(request: Request, study: str | None) -> JSONResponse:
        user: CurrentUser = await run_in_threadpool(_storing_user, request)
        if study is not None:
            try:
                check_uid(study, "Study Instance UID")
            except StorageError as exc:
                raise HTTPException(status_code=400, detail=str(exc)) from exc
        content_type, options = parse_options_header(request.headers.get("content-type", ""))
        related_type = options.get(b"type", b"application/dicom").decode("latin-1").lower()
        boundary = options.get(b"boundary", b"").decode("latin-1")
        if (content_type != b"multipart/related" or related_type != "application/dicom"
                or not boundary):
            raise HTTPException(
                status_code=415,
                detail='send multipart/related; type="application/dicom" with a boundary',
            )
        limit = int(request.app.state.settings.web.stow_max_request_mb * 2**20)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise HTTPException(
                status_code=413,
                detail=f"request larger than web.stow_max_request_mb ({limit / 2**20:g} MB): "
                "send the study in several requests",
            )
        parts = await _read_parts(request, boundary, limit)
        if not parts:
            raise HTTPException(status_code=400, detail="the multipart body has no part")
        result = await run_in_threadpool(
            StowStore(request).store_parts, parts, study, user.name[:16]
        )
        logger.info("STOW-RS from %s: %d stored, %d refused", user.name, len(result.referenced),
                    len(result.failed))
        return JSONResponse(result.to_json(), status_code=result.status_code(),
                            media_type=DICOM_JSON)

    @router.post("/studies", summary="Store instances (STOW-RS)")
    async def stow_any(request: Request) -> JSONResponse:
        return await stow(request, None)

    @router.post("/studies/{study}", summary="Store instances of one study (STOW-RS)")
    async def stow_study(request: Request, study: str) -> JSONResponse:
        return await stow(request, study)

    return router
