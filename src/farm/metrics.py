"""The metrics counted in this process (prometheus-client); ``farm.monitoring`` serves them.

Requests per route template (bounded labels: the template, never the raw path), leaderboard
cache hits and misses, event handling time on the bus.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"  # the route label of requests no route matched (404s, scans)

HTTP_LATENCY = Histogram(
    "farm_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ["method", "route"],
    registry=None,
)
HTTP_REQUESTS = Counter(
    "farm_http_requests",
    "HTTP requests answered, by route template and status code.",
    ["method", "route", "status"],
    registry=None,
)
HTTP_ERRORS = Counter(
    "farm_http_errors",
    "HTTP requests answered with a 4xx or 5xx status, by route template and status code.",
    ["method", "route", "status"],
    registry=None,
)
LEADERBOARD_CACHE = Counter(
    "farm_leaderboard_cache_requests",
    "Leaderboard reads: hit (cache answered), miss (a cold board was rebuilt from SQL), "
    "unavailable (the cache was down; SQL answered).",
    ["result"],
    registry=None,
)
EVENT_HANDLING = Histogram(
    "farm_event_handling_seconds",
    "Time from publishing an event to every handler having run (the bus's lag).",
    ["topic"],
    registry=None,
)
PROCESS_METRICS = (HTTP_LATENCY, HTTP_REQUESTS, HTTP_ERRORS, LEADERBOARD_CACHE, EVENT_HANDLING)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request (``route`` is its template, e.g. ``/api/agents/{agent_id}``)."""
    method = method if method in METHODS else "OTHER"
    HTTP_LATENCY.labels(method, route).observe(seconds)
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    if status >= 400:
        HTTP_ERRORS.labels(method, route, str(status)).inc()
