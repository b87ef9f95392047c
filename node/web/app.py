"""The admin dashboard: FastAPI app factory, server-rendered pages (Jinja2), /metrics.

Pages: ``/login``, ``/jobs`` (filters, pages of 50), ``/jobs/{id}`` (timeline, routing, results,
outputs with send status, SC key-image thumbnails, retry/cancel/delete for admins), ``/node``,
``/audit`` (admins). REST API: :mod:`node.web.api`. Research use, not for diagnosis.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware

from node.config import Settings
from node.presentation import measurement_lines
from node.users import CurrentUser
from node.web.api import JobId, build_router, find_job, job_search, perform_action
from node.web.auth import (
    BasicCredentialCache,
    BasicThrottleMiddleware,
    check_password,
    csrf_ok,
    csrf_token,
    current_user,
    sign_in,
    sign_out,
)
from node.web.dicomweb import build_dicomweb_router
from node.web.metrics import make_registry, render
from node.web.sessions import SecureCookieMiddleware, SessionRevocations
from node.web.throttle import SignInGuard, SignInRefused
from node.web.status import node_status, software_version
from node.web.views import (
    job_detail,
    job_summary,
    source_has_burned_in_annotation,
    thumbnail_png,
)
from storage.database import JobDatabase
from storage.models import JobState

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
PAGE_SIZE = 50
SESSION_COOKIE = "ainode_session"


def load_secret_key(settings: Settings) -> str:
    """The session-signing key from ``web.secret_key_file`` (created with mode 0600 if missing)."""
    path = settings.web.secret_key_file or Path(settings.data_dir) / "web-secret.key"
    path = Path(path)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        logger.info("created the dashboard session key %s", path)
    key = path.read_text().strip()
    if len(key) < 32:
        from ainode_core.errors import ConfigError

        raise ConfigError(f"{path}: session key too short ({len(key)} characters, need 32)")
    return key


_SECURITY_HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
     b"frame-ancestors 'none'; form-action 'self'"),
)
_NO_STORE_PREFIXES = ("/jobs", "/api", "/node", "/audit", "/dicomweb")


class SecurityHeadersMiddleware:
    """ASGI middleware: frame, sniffing, referrer and content-security headers on every response,
    ``Cache-Control: no-store`` on data pages (a plain ASGI wrapper: no task or stream per
    request, which matters under a flood)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        no_store = str(scope.get("path", "")).startswith(_NO_STORE_PREFIXES)

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in _SECURITY_HEADERS if n not in present]
                if no_store and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _LoginRequired(Exception):
    def __init__(self, target: str) -> None:
        self.target = target


def create_app(settings: Settings, database: JobDatabase) -> FastAPI:
    """Build the dashboard application.

    Parameters
    ----------
    settings:
        Node settings (``settings.web`` configures the dashboard; ``data_dir`` holds the
        session key unless ``web.secret_key_file`` is set).
    database:
        The node's job database (shared with ``ainode serve``).

    Returns
    -------
    FastAPI
        Serve it with uvicorn (``ainode dashboard`` does).
    """
    app = FastAPI(
        title="ainode admin API",
        version=software_version(),
        description="Jobs and node status of an ainode DICOM node. Research use, not for diagnosis.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.database = database
    app.state.sign_in_guard = SignInGuard()
    app.state.revocations = SessionRevocations(database, settings.web.session_lifetime_minutes * 60)
    app.state.basic_cache = BasicCredentialCache()
    app.state.metrics_registry = make_registry(database)
    app.add_middleware(
        SessionMiddleware,
        secret_key=load_secret_key(settings),
        session_cookie=SESSION_COOKIE,
        max_age=settings.web.session_lifetime_minutes * 60,
        same_site="strict",
        https_only=settings.web.cookie_secure,
    )
    # Outside the session middleware: marks its cookie Secure for requests that came over TLS.
    app.add_middleware(
        SecureCookieMiddleware,
        cookie_name=SESSION_COOKIE,
        always=settings.web.cookie_secure,
        trusted_proxies=settings.web.trusted_proxies,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals["measurement_lines"] = measurement_lines  # job page panel (H7)
    app.include_router(build_router())
    app.include_router(build_dicomweb_router())

    app.add_middleware(SecurityHeadersMiddleware)

    # Added last, so outermost: HTTP Basic guesses meet the throttle before sessions, threads
    # or the database.
    app.add_middleware(
        BasicThrottleMiddleware,
        guard=app.state.sign_in_guard,
        cache=app.state.basic_cache,
        trusted_proxies=settings.web.trusted_proxies,
    )

    @app.exception_handler(_LoginRequired)
    async def _to_login(request: Request, exc: _LoginRequired) -> Response:
        return RedirectResponse("/login?" + urlencode({"next": exc.target}), status_code=303)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith(("/api/", "/dicomweb/")) or request.url.path == "/metrics":
            return await http_exception_handler(request, exc)
        user = current_user(request)
        return page(request, "error.html", user, status_code=exc.status_code,
                    title=f"Error {exc.status_code}", message=exc.detail)

    def page(request: Request, name: str, user: CurrentUser | None, status_code: int = 200,
             **context: Any) -> HTMLResponse:
        flash = request.session.pop("flash", None)
        return templates.TemplateResponse(
            request,
            name,
            {"user": user, "csrf": csrf_token(request), "flash": flash,
             "version": software_version(), **context},
            status_code=status_code,
        )

    def require_page_user(request: Request) -> CurrentUser:
        user = current_user(request)
        if user is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise _LoginRequired(target)
        if not user.reads_dashboard:
            raise HTTPException(status_code=403, detail="A service account cannot read the dashboard.")
        return user

    # -- sign-in ---------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse("/jobs", status_code=303)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        # async: answered on the event loop, never queued behind sign-ins in the thread pool
        return {"status": "ok"}

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request, next: str = "/jobs") -> Response:
        return page(request, "login.html", current_user(request), next=_safe_next(next), error=None)

    @app.post("/login", response_class=HTMLResponse, include_in_schema=False)
    def login(
        request: Request,
        username: str = Form(...),
        password: str = Form(...),
        csrf_token_field: str = Form("", alias="csrf_token"),
        next: str = Form("/jobs"),
    ) -> Response:
        target = _safe_next(next)
        if not csrf_ok(request, csrf_token_field):
            return page(request, "login.html", None, status_code=403, next=target,
                        error="The form expired; please sign in again.")
        try:
            user = check_password(request, username, password)
        except SignInRefused as refused:
            logger.debug("sign-in refused by the throttle: %s", refused.message)
            response = page(request, "login.html", None, status_code=429, next=target,
                            error=refused.message)
            response.headers["Retry-After"] = str(refused.retry_after_s)
            return response
        if user is None:
            logger.warning("failed sign-in for %r from %s", username[:64],
                           request.client.host if request.client else "?")
            return page(request, "login.html", None, status_code=401, next=target,
                        error="Wrong user name or password.")
        sign_in(request, user)
        logger.info("%s signed in", user.name)
        return RedirectResponse(target, status_code=303)

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, csrf_token_field: str = Form("", alias="csrf_token")) -> Response:
        if csrf_ok(request, csrf_token_field):
            sign_out(request)
        return RedirectResponse("/login", status_code=303)

    # -- jobs ------------------------------------------------------------------------------------

    @app.get("/jobs", response_class=HTMLResponse, include_in_schema=False)
    def jobs_page(
        request: Request,
        state: str = "",
        protocol: str = "",
        calling_ae: str = "",
        date_from: str = "",
        date_to: str = "",
        q: str = "",
        page_number: int = 1,
    ) -> Response:
        user = require_page_user(request)
        page_number = max(1, page_number)
        filters = {"state": state, "protocol": protocol, "calling_ae": calling_ae,
                   "date_from": date_from, "date_to": date_to, "q": q}
        created_from = _parse_date(date_from)
        created_to = _parse_date(date_to)
        if created_to is not None:
            created_to += dt.timedelta(days=1)
        result = database.query_jobs(
            state=state or None, protocol=protocol or None, calling_ae_title=calling_ae or None,
            created_from=created_from, created_to=created_to,
            offset=(page_number - 1) * PAGE_SIZE, limit=PAGE_SIZE, **job_search(q, user),
        )
        pages = max(1, -(-result.total // PAGE_SIZE))
        query_base = urlencode({k: v for k, v in filters.items() if v})
        return page(
            request, "jobs.html", user,
            jobs=[job_summary(job, user) for job in result.jobs],
            total=result.total, page_number=page_number, pages=pages, filters=filters,
            query_base=query_base, states=[s.value for s in JobState],
            choices=database.distinct_job_values(),
        )

    @app.get("/jobs/{job_id}", response_class=HTMLResponse, include_in_schema=False)
    def job_page(request: Request, job_id: JobId) -> Response:
        user = require_page_user(request)
        job = find_job(database, job_id)
        if job is None:
            raise HTTPException(status_code=404, detail=f"No job {job_id}.")
        audit = database.list_audit(limit=20, job_id=job_id) if user.is_admin else []
        return page(request, "job.html", user, job=job_detail(job, user, database), audit=audit)

    @app.post("/jobs/{job_id}/{action}", include_in_schema=False)
    def job_action(request: Request, job_id: JobId, action: str,
                   csrf_token_field: str = Form("", alias="csrf_token")) -> Response:
        user = require_page_user(request)
        if action not in ("retry", "cancel", "delete"):
            raise HTTPException(status_code=404, detail=f"No action {action!r}.")
        if not csrf_ok(request, csrf_token_field):
            raise HTTPException(status_code=403, detail="The form expired (CSRF check); reload the page.")
        try:
            message = perform_action(request, user, action, job_id)
        except HTTPException as exc:
            if exc.status_code == 409:
                request.session["flash"] = {"level": "error", "message": str(exc.detail)}
                return RedirectResponse(f"/jobs/{job_id}", status_code=303)
            raise
        request.session["flash"] = {"level": "info", "message": f"Job {job_id}: {message}"}
        target = "/jobs" if action == "delete" else f"/jobs/{job_id}"
        return RedirectResponse(target, status_code=303)

    @app.get("/jobs/{job_id}/outputs/{output_id}/thumbnail.png", include_in_schema=False)
    def thumbnail(request: Request, job_id: JobId, output_id: int) -> Response:
        user = require_page_user(request)
        job = find_job(database, job_id)
        output = next((o for o in job.outputs if o.id == output_id), None) if job else None
        if job is None or output is None or output.kind != "SC":
            raise HTTPException(status_code=404, detail="No such key image.")
        if not user.sees_phi and source_has_burned_in_annotation(job, database):
            raise HTTPException(
                status_code=403,
                detail="The source images declare burned-in annotation; the phi role is needed.",
            )
        try:
            png = thumbnail_png(output.path)
        except (OSError, ValueError, AttributeError) as exc:
            raise HTTPException(status_code=404,
                                detail=f"Key image not readable from the dashboard host: {exc}") from exc
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    # -- node, audit, metrics --------------------------------------------------------------------

    @app.get("/node", response_class=HTMLResponse, include_in_schema=False)
    def node_page(request: Request) -> Response:
        user = require_page_user(request)
        return page(request, "node.html", user, status=node_status(settings, database))

    @app.get("/audit", response_class=HTMLResponse, include_in_schema=False)
    def audit_page(request: Request) -> Response:
        user = require_page_user(request)
        if not user.is_admin:
            raise HTTPException(status_code=403, detail="The audit log needs the admin role.")
        return page(request, "audit.html", user, entries=database.list_audit(limit=200))

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        if not settings.web.metrics_public and current_user(request, allow_basic=True) is None:
            return JSONResponse({"detail": "authentication required"}, status_code=401)
        return Response(render(app.state.metrics_registry),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def _safe_next(target: str) -> str:
    """Only same-site paths (no open redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/jobs"
    return target


def _parse_date(text: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d")
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=f"Invalid date {text!r}: use YYYY-MM-DD.") from exc
