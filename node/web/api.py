"""REST API under ``/api/v1`` (OpenAPI schema at ``/openapi.json``, docs at ``/api/docs``).

Authentication: the dashboard's session cookie (state-changing calls then need the
``X-CSRF-Token`` header, see ``GET /api/v1/me``), a trusted proxy header, or HTTP Basic
(``curl -u name:password``). 401 without credentials, 403 without the needed role.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from node.users import CurrentUser
from node.web.auth import client_address, csrf_ok, csrf_token, current_user
from node.web.status import node_status
from node.web.views import iso, job_detail, job_summary
from ainode_core.errors import StorageError
from storage.models import JobState


class JobSummaryOut(BaseModel):
    id: int
    state: str
    protocol: str | None
    modality: str
    calling_ae_title: str
    study_instance_uid: str
    series_instance_uid: str
    accession_number: str | None = Field(description="null unless the user has the phi role")
    instances: int
    attempts: int
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    error: str | None


class SendOut(BaseModel):
    destination: str
    state: str
    attempts: int
    last_error: str | None
    sent_at: str | None


class OutputOut(BaseModel):
    id: int
    kind: str
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    created_at: str | None
    sends: list[SendOut]


class EventOut(BaseModel):
    at: str | None
    level: str
    message: str


class QueuePlaceOut(BaseModel):
    position: int = Field(description="1 = claimed next (priority, then callers in turn, then age)")
    queued: int = Field(description="jobs queued in all")
    priority: str
    waiting_s: float | None = Field(description="seconds since the job was queued")


class JobDetailOut(JobSummaryOut):
    routing_rule: str | None
    routing_reason: str | None
    algorithm: str | None
    worker: str | None
    lease_expires_at: str | None
    results: dict[str, Any] | None
    outputs: list[OutputOut]
    events: list[EventOut]
    patient: dict[str, str | None] | None = Field(
        description="patient name / ID / accession from the stored header; null without phi"
    )
    phi_hidden: bool
    priority: str | None = Field(default=None, description="urgent, routine or low")
    queue: QueuePlaceOut | None = Field(
        default=None, description="projected place of a queued job (null unless queued)"
    )


class JobPageOut(BaseModel):
    total: int
    offset: int
    limit: int
    jobs: list[JobSummaryOut]


class ActionOut(BaseModel):
    job_id: int
    action: str
    message: str


class MeOut(BaseModel):
    name: str
    roles: list[str]
    via: str
    csrf_token: str | None = Field(description="send as X-CSRF-Token with session auth")


class AuditOut(BaseModel):
    at: str | None
    user_name: str
    action: str
    job_id: int | None
    remote_address: str
    outcome: str


def api_user(request: Request) -> CurrentUser:
    """The API caller; 401 when not authenticated (no WWW-Authenticate challenge)."""
    user = current_user(request, allow_basic=True)
    if user is None:
        raise HTTPException(status_code=401, detail="authentication required (session or HTTP Basic)")
    if not user.reads_dashboard:
        raise HTTPException(status_code=403, detail="a service account may only store by STOW-RS")
    return user


#: A job id in a URL. Any integer parses; one outside :data:`JOB_ID_RANGE` names no job and is
#: answered 404 like any unknown id (see :func:`find_job`), never passed to the database.
JobId = Annotated[int, Path(description="Job id")]
#: The job database's primary key is a signed 64-bit integer starting at 1.
JOB_ID_RANGE = range(1, 2**63)


def find_job(database: Any, job_id: int) -> Any:
    """The job, or ``None`` when there is none (ids outside :data:`JOB_ID_RANGE` included)."""
    return database.get_job(job_id) if job_id in JOB_ID_RANGE else None


def job_search(text: str | None, user: CurrentUser) -> dict[str, Any]:
    """``query_jobs`` arguments for a search box text, by role.

    Users without the phi role match an Accession Number only in full, so that prefix or
    substring searches cannot spell one out (an oracle); phi users search substrings.
    """
    return {"text": text or None, "accession_exact": not user.sees_phi}


def perform_action(request: Request, user: CurrentUser, action: str, job_id: int) -> str:
    """Run retry/cancel/delete for ``user`` and write the audit row (also on refusal).

    Raises
    ------
    HTTPException
        403 without the admin role, 404 for an unknown job, 409 when the job's state forbids it.
    """
    database = request.app.state.database
    address = client_address(request)
    if job_id not in JOB_ID_RANGE:
        raise HTTPException(status_code=404, detail=f"no job {job_id}")
    if not user.is_admin:
        database.record_audit(
            user_name=user.name, action=action, job_id=job_id, remote_address=address,
            outcome="refused: admin role required",
        )
        raise HTTPException(
            status_code=403,
            detail=f"{action} needs the admin role; {user.name} has {', '.join(sorted(user.roles))}",
        )
    try:
        if action == "retry":
            message = database.retry_job(job_id)
        elif action == "cancel":
            message = database.cancel_job(job_id, by=user.name)
        elif action == "delete":
            message = database.delete_job(job_id)
        else:  # pragma: no cover - routes only pass the three actions
            raise ValueError(action)
    except StorageError as exc:
        database.record_audit(
            user_name=user.name, action=action, job_id=job_id, remote_address=address,
            outcome=f"refused: {exc}",
        )
        status = 404 if str(exc).startswith("no job") else 409
        raise HTTPException(status_code=status, detail=str(exc)) from exc
    if action == "retry":
        database.add_event(job_id, f"retry requested by {user.name} from {address}")
    database.record_audit(
        user_name=user.name, action=action, job_id=job_id, remote_address=address, outcome=message
    )
    return message


def _check_csrf(request: Request, user: CurrentUser) -> None:
    if user.via != "basic" and not csrf_ok(request, None):
        raise HTTPException(
            status_code=403,
            detail="missing or wrong X-CSRF-Token header (get it from GET /api/v1/me)",
        )


def build_router() -> APIRouter:
    """The ``/api/v1`` router."""
    router = APIRouter(prefix="/api/v1", tags=["api"])

    @router.get("/me", response_model=MeOut, summary="The authenticated user")
    def me(request: Request) -> dict[str, Any]:
        user = api_user(request)
        return {
            "name": user.name,
            "roles": sorted(user.roles),
            "via": user.via,
            "csrf_token": csrf_token(request) if user.via != "basic" else None,
        }

    @router.get("/jobs", response_model=JobPageOut, summary="List jobs, most recent first")
    def list_jobs(
        request: Request,
        state: JobState | None = None,
        protocol: str | None = None,
        calling_ae_title: str | None = None,
        created_from: Annotated[dt.datetime | None, Query(description="UTC, inclusive")] = None,
        created_to: Annotated[dt.datetime | None, Query(description="UTC, exclusive")] = None,
        q: Annotated[
            str | None,
            Query(description="Study/Series UID substring, accession number (in full "
                              "unless phi role: then a substring), SOP UID, job id"),
        ] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        user = api_user(request)
        page = request.app.state.database.query_jobs(
            state=state.value if state else None,
            protocol=protocol,
            calling_ae_title=calling_ae_title,
            created_from=_naive_utc(created_from),
            created_to=_naive_utc(created_to),
            offset=offset,
            limit=limit,
            **job_search(q, user),
        )
        return {
            "total": page.total,
            "offset": page.offset,
            "limit": page.limit,
            "jobs": [job_summary(job, user) for job in page.jobs],
        }

    @router.get("/jobs/{job_id}", response_model=JobDetailOut, summary="One job in full")
    def show_job(request: Request, job_id: JobId) -> dict[str, Any]:
        user = api_user(request)
        database = request.app.state.database
        job = find_job(database, job_id)
        if job is None:
            raise HTTPException(status_code=404, detail=f"no job {job_id}")
        return job_detail(job, user, database)

    @router.post("/jobs/{job_id}/retry", response_model=ActionOut, summary="Retry a job (admin)")
    def retry(request: Request, job_id: JobId) -> dict[str, Any]:
        user = api_user(request)
        _check_csrf(request, user)
        return {"job_id": job_id, "action": "retry",
                "message": perform_action(request, user, "retry", job_id)}

    @router.post("/jobs/{job_id}/cancel", response_model=ActionOut, summary="Cancel a job (admin)")
    def cancel(request: Request, job_id: JobId) -> dict[str, Any]:
        user = api_user(request)
        _check_csrf(request, user)
        return {"job_id": job_id, "action": "cancel",
                "message": perform_action(request, user, "cancel", job_id)}

    @router.delete("/jobs/{job_id}", response_model=ActionOut, summary="Delete a settled job (admin)")
    def delete(request: Request, job_id: JobId) -> dict[str, Any]:
        user = api_user(request)
        _check_csrf(request, user)
        return {"job_id": job_id, "action": "delete",
                "message": perform_action(request, user, "delete", job_id)}

    @router.get("/node", summary="Node status")
    def node(request: Request) -> dict[str, Any]:
        api_user(request)
        return node_status(request.app.state.settings, request.app.state.database)

    @router.get("/audit", response_model=list[AuditOut], summary="Audit log (admin)")
    def audit(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        job_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    ) -> list[dict[str, Any]]:
        user = api_user(request)
        if not user.is_admin:
            raise HTTPException(status_code=403, detail="the audit log needs the admin role")
        return [
            {"at": iso(e.at), "user_name": e.user_name, "action": e.action, "job_id": e.job_id,
             "remote_address": e.remote_address, "outcome": e.outcome}
            for e in request.app.state.database.list_audit(limit=limit, job_id=job_id)
        ]

    return router


def _naive_utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)
