"""The web dashboard: the mesh, training and workers, live in a browser, plus
Prometheus metrics. Read-only: every route answers GET, and only GET.

The broker loop never waits for it. A few times a second `Dashboard.offer`
(called from the broker's tick) builds a snapshot of the broker's state as
plain data (snapshot.py) and publishes it (frames.py); HTTP runs in threads
of its own (server.py) and serves the latest snapshot only: the page (static/),
its Server-Sent Events stream, /api/state as JSON and /metrics (metrics.py)."""
from .listen import Listen, parse
from .server import Dashboard

__all__ = ["Dashboard", "Listen", "parse"]
