"""The HTTP side of `vaelab explore`: the standard library's threading server, a fixed set of routes, and
static files from the package (nothing else on disk is ever served).

    GET /                       the page (static/index.html)
    GET /static/<name>          app.js, app.css (a fixed list read from the package at start-up)
    GET /api/info               the map (x, y per image), labels, class names, latent ranges, PCA axes
    GET /api/image?i=N          image N of the split (PNG)
    GET /api/decode?z=a,b,..    the decoded image at a code (or at=x,y: a map point; or i=N: image N's
                                posterior mean); &shift=v adds a vector; &label=K for conditional models;
                                PNG, with the code (before the shift) in the X-Latent header
    GET /api/interpolate?a=N&b=M&steps=8&mode=linear|slerp       a strip of decoded images (PNG)
    GET /api/attribute?from=A&to=B   (or from_set=1,2&to_set=3,4) the attribute vector (JSON)
    GET /api/samples?sampler=prior|gmm|vq-prior&n=16&seed=0&temperature=1  a grid of samples (PNG)

Bad values get a 400 with a one-line JSON message. The server bounds its worker threads (extra
connections wait in the listen backlog), times out stalled clients, and ignores clients that hang up.
`serve_until_interrupted` (what `vaelab explore` runs) stops it on Ctrl-C between requests.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..errors import VaelabError

STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
MAX_THREADS = 32  # requests handled at once; more wait in the listen backlog
BACKLOG = 1024
CLIENT_TIMEOUT = 10.0  # seconds a client may stall while sending its request
MAX_SAMPLES = 256


class BadRequest(Exception):
    """A query value the app cannot use: answered with 400 and this message."""


def load_static() -> dict[str, tuple[bytes, str]]:
    """The app's files, read once from the package: {name: (bytes, content type)}."""
    out = {}
    for entry in files("vaelab.explore").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            out[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return out


class ExploreServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer with at most MAX_THREADS handler threads and a deep listen backlog."""

    daemon_threads = True
    request_queue_size = BACKLOG
    allow_reuse_address = True

    def __init__(self, address, explorer, max_threads: int = MAX_THREADS):
        self.explorer = explorer
        self.static = load_static()
        self._slots = threading.BoundedSemaphore(max_threads)
        self.loopback = str(address[0]) in ("127.0.0.1", "localhost", "::1") or str(address[0]).startswith("127.")
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def process_request(self, request, client_address):
        self._slots.acquire()  # blocks the accept loop while MAX_THREADS requests are being handled
        slot = _Slot(self._slots)
        try:
            t = threading.Thread(target=self._handle, args=(request, client_address, slot), daemon=True)
            t.start()
        except BaseException:  # the thread could not start (or an interrupt came while it did): the slot goes back once
            slot.release()
            raise

    def _handle(self, request, client_address, slot):
        try:
            self.process_request_thread(request, client_address)
        finally:
            slot.release()

    def handle_error(self, request, client_address):  # a client that hung up is not worth a traceback
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, TimeoutError, socket.timeout)):  # hung up, reset, or closed under us at shutdown
            return
        super().handle_error(request, client_address)

    def serve_until_interrupted(self, poll_interval: float = 0.25) -> None:
        """Serve until Ctrl-C (SIGINT), then stop cleanly: the server loop runs in a thread, and SIGINT only
        sets a flag, so no KeyboardInterrupt lands inside the accept loop, a lock or a request being answered;
        the loop is shut down between requests and the app closed (see `server_close`). Main thread only."""
        import signal

        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            try:
                self.serve_forever(poll_interval)
            finally:
                self.server_close()
            return
        stop = threading.Event()
        previous = signal.signal(signal.SIGINT, lambda *_: stop.set())  # a second Ctrl-C while closing: ignored too
        loop = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": poll_interval}, name="vaelab-explore-serve")
        try:
            loop.start()
            while loop.is_alive() and not stop.wait(poll_interval):
                pass
        finally:
            try:
                if loop.ident is not None:  # started: shutdown() returns once serve_forever has left its loop
                    self.shutdown()
                    loop.join()
                self.server_close()
            finally:
                signal.signal(signal.SIGINT, previous)

    def server_close(self):
        super().server_close()
        self.explorer.close()


class _Slot:
    """One handler's share of the server's semaphore, given back exactly once by whichever side ends up with it."""

    def __init__(self, semaphore: threading.BoundedSemaphore):
        self._semaphore, self._lock, self._held = semaphore, threading.Lock(), True

    def release(self) -> None:
        with self._lock:
            if self._held:
                self._held = False
                self._semaphore.release()


def make_server(explorer, host: str = "127.0.0.1", port: int = 8765) -> ExploreServer:
    """Bind the app to host:port (port 0 picks a free one); one clear error when that fails."""
    try:
        return ExploreServer((host, port), explorer)
    except OSError as e:
        import errno

        if e.errno == errno.EADDRINUSE:
            raise VaelabError(f"port {port} on {host} is in use", "pick another with --port N (0 picks a free one)") from None
        raise VaelabError(f"cannot listen on {host}:{port} ({e.strerror or e})", "check --host and --port") from None


# -- query parsing ----------------------------------------------------------------------------------------
def _one(q: dict, key: str, default=None):
    vals = q.get(key)
    if not vals:
        return default
    if len(vals) > 1:
        raise BadRequest(f"{key} is given {len(vals)} times")
    return vals[0]


def _floats(text: str, key: str, n: int | None = None) -> np.ndarray:
    try:
        vals = [float(t) for t in text.split(",")]
    except ValueError:
        raise BadRequest(f"{key} must be comma-separated numbers") from None
    if not all(math.isfinite(v) for v in vals):
        raise BadRequest(f"{key} must be finite numbers")
    if n is not None and len(vals) != n:
        raise BadRequest(f"{key} has {len(vals)} numbers, expected {n}")
    return np.asarray(vals, np.float32)


def _int(q: dict, key: str, default: int | None = None, lo: int | None = None, hi: int | None = None) -> int | None:
    text = _one(q, key)
    if text is None:
        if default is None and lo is not None:
            raise BadRequest(f"{key} is missing")
        return default
    try:
        v = int(text)
    except ValueError:
        raise BadRequest(f"{key} must be an integer, got '{text[:40]}'") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise BadRequest(f"{key} must be in {lo}..{hi}, got {v}")
    return v


def _float(q: dict, key: str, default: float, lo: float, hi: float) -> float:
    text = _one(q, key)
    if text is None:
        return default
    v = float(_floats(text, key, 1)[0])
    if not lo <= v <= hi:
        raise BadRequest(f"{key} must be in {lo:g}..{hi:g}, got {v:g}")
    return v


def _index_list(text: str, key: str, n: int) -> list[int]:
    try:
        idx = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise BadRequest(f"{key} must be comma-separated image indices") from None
    if not idx or min(idx) < 0 or max(idx) >= n:
        raise BadRequest(f"{key} must be indices in 0..{n - 1}")
    return idx


# -- routes -----------------------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    server: ExploreServer
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive holds a worker thread
    timeout = CLIENT_TIMEOUT
    server_version = "vaelab-explore"

    def log_message(self, format, *args):  # quiet: the terminal shows the URL, not every request
        pass

    def do_HEAD(self):
        self.do_GET(head=True)

    def do_POST(self):
        self._send_json({"error": "only GET is supported"}, HTTPStatus.METHOD_NOT_ALLOWED)

    def do_GET(self, head: bool = False):
        self._head = head
        parts = urlsplit(self.path)
        try:
            q = parse_qs(parts.query, keep_blank_values=False, strict_parsing=False, max_num_fields=64)
        except ValueError:
            return self._send_json({"error": "too many query fields"}, HTTPStatus.BAD_REQUEST)
        path = parts.path
        if not self._host_allowed():
            return self._send_json({"error": "this app answers only to localhost"}, HTTPStatus.FORBIDDEN)
        try:
            if path in ("/", "/index.html"):
                return self._static("index.html")
            if path.startswith("/static/"):
                return self._static(path[len("/static/"):])
            route = ROUTES.get(path)
            if route is None:
                return self._send_json({"error": f"no such page: {path[:80]}"}, HTTPStatus.NOT_FOUND)
            route(self, q)
        except BadRequest as e:
            self._send_json({"error": str(e)}, HTTPStatus.BAD_REQUEST)
        except VaelabError as e:
            self._send_json({"error": str(e)}, HTTPStatus.BAD_REQUEST)
        except (ConnectionError, TimeoutError):
            return  # the client went away
        except Exception as e:  # noqa: BLE001 - one failed request must not take the app down
            self._send_json({"error": f"{type(e).__name__}: {str(e)[:200]}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _host_allowed(self) -> bool:
        """Bound to loopback, answer only to a loopback Host header: a web page that re-points its own name
        at 127.0.0.1 (DNS rebinding) cannot read the app."""
        if not self.server.loopback:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in ("127.0.0.1", "localhost", "[::1]", "::1") or name.startswith("127.")

    # -- responses ---------------------------------------------------------------------------------------
    def _send(self, body: bytes, ctype: str, status: int = 200, headers: dict | None = None, cache: bool = False):
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if not getattr(self, "_head", False):
                self.wfile.write(body)
        except (ConnectionError, TimeoutError):
            pass  # the client hung up mid-answer

    def _send_json(self, data, status: int = 200):
        self._send(json.dumps(data).encode(), "application/json", status)

    def _png(self, data: bytes, headers: dict | None = None, cache: bool = False):
        self._send(data, "image/png", headers=headers, cache=cache)

    def _static(self, name: str):
        item = self.server.static.get(name)  # a fixed dict: '../' or any other path is simply not in it
        if item is None:
            return self._send_json({"error": "no such file"}, HTTPStatus.NOT_FOUND)
        self._send(item[0], item[1])

    # -- helpers -----------------------------------------------------------------------------------------
    @property
    def ex(self):
        return self.server.explorer

    def _label(self, q) -> int | None:
        return self._class(q, "label")

    def _class(self, q, key: str) -> int | None:
        """A class by index (the page sends indices: names such as '4' would be ambiguous)."""
        if _one(q, key) in (None, ""):
            return None
        return _int(q, key, None, 0, len(self.ex.class_names) - 1)

    def _image_index(self, q, key: str) -> int:
        return _int(q, key, None, 0, len(self.ex.z) - 1)


def _route_info(h: Handler, q):
    h._send_json(h.ex.info())


def _route_image(h: Handler, q):
    h._png(h.ex.data_png(h._image_index(q, "i")), cache=True)


def _route_decode(h: Handler, q):
    given = [k for k in ("z", "at", "i") if _one(q, k) is not None]
    if len(given) != 1:
        raise BadRequest("give exactly one of z=CODE, at=X,Y or i=IMAGE")
    if given[0] == "z":
        z = _floats(_one(q, "z"), "z", h.ex.model.latent_dim)
        if np.abs(z).max() > 1e4:
            raise BadRequest("z is out of range (|z| > 1e4)")
    elif given[0] == "at":
        z = h.ex.at(_floats(_one(q, "at"), "at", 2))
    else:
        z = h.ex.z[h._image_index(q, "i")]
    shift = _one(q, "shift")  # the attribute vector times its strength, added to the code
    z_out = z if shift is None else z + _floats(shift, "shift", h.ex.model.latent_dim)
    png = h.ex.decode_png(z_out, h._label(q))
    h._png(png, headers={"X-Latent": ",".join(f"{v:.5g}" for v in np.asarray(z, np.float64))})


def _route_interpolate(h: Handler, q):
    a, b = h._image_index(q, "a"), h._image_index(q, "b")
    steps = _int(q, "steps", 8, 2, 32)
    mode = _one(q, "mode", "linear")
    if mode not in ("linear", "slerp"):
        raise BadRequest("mode must be linear or slerp")
    h._png(h.ex.interpolation_png(a, b, steps, mode, h._label(q)))


def _route_attribute(h: Handler, q):
    n = len(h.ex.z)
    sets = []
    for key in ("from", "to"):
        cls, idx = _one(q, key), _one(q, f"{key}_set")
        if (cls is None) == (idx is None):
            raise BadRequest(f"give either {key}=CLASS or {key}_set=i,j,...")
        sets.append(h._class(q, key) if cls is not None else _index_list(idx, f"{key}_set", n))
    v = h.ex.attribute(*sets)
    h._send_json({"vector": [round(float(x), 6) for x in v], "norm": float(np.linalg.norm(v))})


def _route_samples(h: Handler, q):
    sampler = _one(q, "sampler", "prior")
    if len(sampler) > 40:
        raise BadRequest("sampler is not a sampler name")  # the explorer says which of its samplers apply
    n = _int(q, "n", 16, 1, MAX_SAMPLES)
    seed = _int(q, "seed", 0, 0, 2**31 - 1)
    temperature = _float(q, "temperature", 1.0, 1e-3, 10.0)
    h._png(h.ex.samples_png(sampler, n, seed, h._label(q), temperature))


ROUTES = {
    "/api/info": _route_info,
    "/api/image": _route_image,
    "/api/decode": _route_decode,
    "/api/interpolate": _route_interpolate,
    "/api/attribute": _route_attribute,
    "/api/samples": _route_samples,
}
