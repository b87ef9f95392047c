"""Admin web dashboard, REST API and Prometheus metrics of ainode (``ainode dashboard``).

See docs/dashboard.md. The dashboard is its own process that reads and writes the job database
shared with ``ainode serve``; it never talks DICOM. FastAPI is imported only when an app is
built, so the command line stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from node.config import Settings
    from storage.database import JobDatabase


def create_app(settings: Settings, database: JobDatabase) -> FastAPI:
    """Build the dashboard application; see :func:`node.web.app.create_app`."""
    from node.web.app import create_app as _create_app

    return _create_app(settings, database)


__all__ = ["create_app"]
