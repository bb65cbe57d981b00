"""The web app: server-rendered pages over the same services as the JSON API (DESIGN §3)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
TEMPLATES_DIR = Path(__file__).parent / "templates"


def mount_static(app: FastAPI) -> None:
    """Serve the pages' CSS, scripts and vendored charting library under ``/static``."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
