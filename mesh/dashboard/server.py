"""The dashboard's HTTP side: a threaded server apart from the broker loop.
It serves the page, /events (Server-Sent Events: one frame per snapshot),
/api/state, /metrics; every other method than GET gets 405, and nothing it
serves can change the mesh."""
import errno
import hmac
import ipaddress
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from urllib.parse import parse_qs, urlsplit

from .frames import Frames
from .metrics import render
from .snapshot import Watch

log = logging.getLogger("mesh.dashboard")
EVERY = 0.25        # seconds between snapshots: the page is refreshed 4 times a second
KEEPALIVE = 15.0    # seconds between comments on a quiet event stream (proxies drop idle streams)
VIEWERS = 16        # event streams at once; one thread each
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
def loopback_host(value):
    """A Host header that names this machine's loopback exactly: localhost, ::1 or an address of
    127.0.0.0/8, with or without a port (127.0.0.1.evil.example is a name, not an address)."""
    host = value.strip()
    if host.startswith("["):  # [::1]:8787
        host, _, rest = host[1:].partition("]")
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return False
    elif host.count(":") == 1:
        host, port = host.split(":")
        if not port.isdigit():
            return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


class Dashboard:
    """Started by the broker's main(); offer() from its tick; close() on its way out."""

    def __init__(self, listen, broker):
        self.frames, self.watch = Frames(), Watch()
        self.server = Server(listen, self.frames)
        self.next = 0.0
        self.offer(broker)  # the first snapshot before the URL is printed: it answers at once
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.5},
                                       name="dashboard", daemon=True)
        self.thread.start()

    @property
    def url(self):
        return self.server.url

    def offer(self, broker):
        """Called from every tick of the broker loop: a new snapshot when one is due, and one at once
        for each death, which shows the groups dead even if they are back already."""
        dead = self.watch.take_deaths(broker)
        if dead:
            self.frames.publish(self.watch.build(broker, dead))
        now = time.monotonic()
        if dead or now >= self.next:
            self.frames.publish(self.watch.build(broker))
            self.next = now + EVERY

    def close(self):
        self.frames.close()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, listen, frames):
        self.frames, self.token = frames, listen.token
        self.viewers = threading.BoundedSemaphore(VIEWERS)
        self.loopback = listen.host in LOOPBACK_NAMES or listen.host.startswith("127.")
        if ":" in listen.host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__((listen.host, listen.port), Handler)
        except OSError as e:
            if not (listen.fallback and e.errno == errno.EADDRINUSE):
                raise
            super().__init__((listen.host, 0), Handler)  # like dask: the default port is taken, take another
            log.warning("dashboard port %d is in use; serving on %d", listen.port, self.server_address[1])
        host = f"[{listen.host}]" if ":" in listen.host else listen.host
        self.url = f"http://{host}:{self.server_address[1]}/" + (f"?token={self.token}" if self.token else "")


class Handler(BaseHTTPRequestHandler):
    server_version = "neuromesh-dashboard"
    timeout = 10  # seconds for a request to arrive, and for a client to take what we write

    def do_GET(self):
        url = urlsplit(self.path)
        refusal = self.refusal(url)
        if refusal:
            return self.send_error(*refusal)
        route = {"/events": self.events, "/api/state": self.state, "/metrics": self.metrics}.get(url.path)
        if route is not None:
            return route()
        if url.path == "/favicon.ico":
            return self.reply(b"", "image/x-icon")  # none: asked for by every browser, not worth a 404 in its log
        if url.path in STATIC:
            name, kind = STATIC[url.path]
            return self.reply(files(__package__).joinpath("static", name).read_bytes(), kind)
        self.send_error(404, "no such page")

    def __getattr__(self, name):
        """Every method but GET (POST, PUT, DELETE, HEAD, anything made up): 405."""
        if name.startswith("do_"):
            return self.not_allowed
        raise AttributeError(name)

    def not_allowed(self):
        self.send_response(405, "read-only: GET only")
        self.send_header("Allow", "GET")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()

    def refusal(self, url):
        """(status, why) when the request may not be served: a wrong token, or, on loopback, a Host
        name from elsewhere (a web page that rebinds its own name to 127.0.0.1)."""
        token_ok = None
        if self.server.token:
            given = parse_qs(url.query).get("token", [""])[0]
            auth = self.headers.get("Authorization") or ""
            if auth.startswith("Bearer "):
                given = auth[len("Bearer "):]
            token_ok = hmac.compare_digest(given.encode(), self.server.token.encode())
        if self.server.loopback and not token_ok and not loopback_host(self.headers.get("Host") or ""):
            return 403, "this dashboard answers to 127.0.0.1 and localhost only"
        if token_ok is False:
            return 401, "a token is needed: open the URL the broker printed"
        return None

    def reply(self, body, kind):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for k, v in SECURITY_HEADERS.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def latest(self):
        frame = self.server.frames.latest()
        if frame is None:
            self.send_error(503, "the broker has not published its state yet")
        return frame

    def state(self):
        frame = self.latest()
        if frame is not None:
            self.reply(frame.json(), "application/json")

    def metrics(self):
        frame = self.latest()
        if frame is not None:
            self.reply(render(frame.state), "text/plain; version=0.0.4; charset=utf-8")

    def events(self):
        """One SSE message per frame, as long as the client reads; one that stops reading is dropped
        after `timeout` seconds, and the broker never knew it was there."""
        if not self.server.viewers.acquire(blocking=False):
            return self.send_error(503, f"{VIEWERS} viewers already")
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            for k, v in SECURITY_HEADERS.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(b"retry: 1000\n\n")
            seq = 0
            while not self.server.frames.closed:
                batch = self.server.frames.after(seq, KEEPALIVE)
                for frame in batch:
                    self.wfile.write(b"data: " + frame.json() + b"\n\n")
                    seq = frame.seq
                if not batch:
                    self.wfile.write(b": still here\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the viewer left, or stopped reading
        finally:
            self.server.viewers.release()

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.address_string(), fmt % args)
