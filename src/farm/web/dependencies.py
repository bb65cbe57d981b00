"""What the pages need: the platform context's services, and the web app's own caches."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from farm.deps import get_context
from farm.web.series import Sparklines


def get_sparklines(request: Request) -> Sparklines:
    """The app's sparkline cache (made on first use, over the app's context)."""
    state = request.app.state
    if getattr(state, "sparklines", None) is None:
        context = get_context(request)
        state.sparklines = Sparklines(context.db, context.artifacts)
    sparklines: Sparklines = state.sparklines
    return sparklines


SparklinesDep = Annotated[Sparklines, Depends(get_sparklines)]
