"""`vaelab explore` (the web app), `vaelab edit`, and the latent-edit functions they share."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import cli, copy_run

PNG = b"\x89PNG\r\n\x1a\n"


# -- the library: interpolation, attribute vectors, maps ---------------------------------------------------
def test_interpolate_linear_and_slerp_end_at_the_codes_and_slerp_keeps_the_norm():
    from vaelab.latent.edit import interpolate

    a, b = np.array([3.0, 0.0]), np.array([0.0, 3.0])
    lin = interpolate(a, b, 5, "linear")
    sph = interpolate(a, b, 5, "slerp")
    for z in (lin, sph):
        assert z.shape == (5, 2)
        np.testing.assert_allclose(z[0], a, atol=1e-6)
        np.testing.assert_allclose(z[-1], b, atol=1e-6)
    np.testing.assert_allclose(lin[2], [1.5, 1.5], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(sph, axis=1), 3.0, atol=1e-5)  # on the great circle
    assert np.linalg.norm(lin[2]) < 2.2  # the straight line cuts through the low-norm centre
    np.testing.assert_allclose(interpolate(a, 2 * a, 3, "slerp")[1], 1.5 * a, atol=1e-6)  # parallel: linear


def test_interpolate_and_attribute_vector_reject_bad_input():
    from vaelab.errors import VaelabError
    from vaelab.latent.edit import attribute_vector, interpolate

    with pytest.raises(VaelabError, match="unknown interpolation"):
        interpolate(np.zeros(2), np.ones(2), 4, "cubic")
    with pytest.raises(VaelabError, match="steps"):
        interpolate(np.zeros(2), np.ones(2), 1)
    z = np.arange(12, dtype=float).reshape(6, 2)
    with pytest.raises(VaelabError, match="no labels"):
        attribute_vector(z, "a", "b")
    with pytest.raises(VaelabError, match="out of range"):
        attribute_vector(z, [0], [9])
    with pytest.raises(VaelabError, match="not one of"):
        attribute_vector(z, "x", "a", labels=np.array([0, 0, 0, 1, 1, 1]), class_names=["a", "b"])


def test_attribute_vector_from_classes_names_and_picked_sets():
    from vaelab.latent.edit import attribute_vector

    z = np.array([[0, 0], [2, 0], [10, 4], [12, 4]], float)
    labels = np.array([0, 0, 1, 1])
    np.testing.assert_allclose(attribute_vector(z, "a", "b", labels, ["a", "b"]), [10, 4])
    np.testing.assert_allclose(attribute_vector(z, 1, 0, labels, ["a", "b"]), [-10, -4])
    np.testing.assert_allclose(attribute_vector(z, [0], [3]), [12, 4])
    np.testing.assert_allclose(attribute_vector(z, np.array([1, 0, 0, 0], bool), np.array([0, 0, 1, 0], bool)), [10, 4])


def test_pca_map_inverts_to_the_codes_plane_and_tsne_to_the_nearest_code():
    from vaelab.errors import VaelabError
    from vaelab.latent.project import Projection, project

    rng = np.random.default_rng(0)
    z = (rng.normal(size=(60, 2)) @ rng.normal(size=(2, 5)) + 3).astype(np.float32)  # a plane in 5-D
    p = project(z, "auto")
    assert p.method == "pca" and p.xy.shape == (60, 2) and p.inverse == "pca-inverse"
    np.testing.assert_allclose(p.to_latent(p.xy[:7]), z[:7], atol=1e-3)  # rank 2: the inverse is exact
    again = Projection.from_arrays(p.to_arrays())
    np.testing.assert_allclose(again.to_latent(p.xy[:3]), z[:3], atol=1e-3)
    t = project(z[:40], "tsne")
    assert t.inverse == "nearest"
    np.testing.assert_array_equal(t.to_latent(t.xy[[5, 9]] + 1e-4), z[[5, 9]])
    assert project(z[:, :2], "auto").method == "identity"
    with pytest.raises(VaelabError, match="not its own"):
        project(z, "identity")
    with pytest.raises(VaelabError, match="unknown map"):
        project(z, "isomap")


def test_edit_moves_images_along_the_class_vector(tiny_run):
    from vaelab import load_run
    from vaelab.latent.edit import attribute_vector, edit
    from vaelab.latent.encode import encode

    r = load_run(tiny_run)
    lat = encode(r, split="train")
    x = r.data().split("val").images[:3]
    same = edit(r, x, "1", "8", strength=0.0, latents=lat)
    np.testing.assert_allclose(same.images.numpy(), r.model.reconstruct(x.float() / 255).numpy(), atol=1e-5)
    moved = edit(r, x, "1", "8", strength=1.0, latents=lat)
    np.testing.assert_allclose(moved.vector, attribute_vector(lat, "1", "8"))
    np.testing.assert_allclose(moved.z - same.z, np.broadcast_to(moved.vector, moved.z.shape), atol=1e-5)
    assert not np.allclose(moved.images.numpy(), same.images.numpy())


def test_edit_command_writes_the_pairs_and_rejects_unknown_classes(tiny_run, tmp_path, capsys):
    from PIL import Image

    from vaelab import load_run

    img = load_run(tiny_run).data().split("val").images[0, 0].numpy()
    Image.fromarray(img).save(tmp_path / "digit.png")
    out = tmp_path / "edited.png"
    assert cli("edit", tiny_run, tmp_path / "digit.png", "--from", "1", "--to", "8", "--strength", "1.5", "--out", out) == 0
    assert out.read_bytes().startswith(PNG)
    with Image.open(out) as im:
        assert im.width > im.height  # the image and its edit, side by side
    assert cli("edit", tiny_run, tmp_path / "digit.png", "--from", "1", "--to", "7") == 2
    assert "class '7'" in capsys.readouterr().err
    for side in ("a", "b"):  # two folders of images: without and with the attribute
        (tmp_path / side).mkdir()
        Image.fromarray(img if side == "a" else 255 - img).save(tmp_path / side / "x.png")
    assert cli("edit", tiny_run, tmp_path / "digit.png", "--from", tmp_path / "a", "--to", tmp_path / "b", "--out", out) == 0


def test_edit_of_a_conditional_model_decodes_as_the_target_class(tiny_conditional_run):
    from vaelab import load_run
    from vaelab.latent.edit import edit

    r = load_run(tiny_conditional_run)
    x = r.data().split("val").images[:2]
    out = edit(r, x, "1", "8", strength=0.0)
    assert out.to_label == 2 and out.images.shape == (2, 1, 28, 28)


def test_the_decode_worker_batches_requests_that_wait_together():
    import torch

    from vaelab.explore.state import DecodeWorker

    class SlowModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.batches = []

        def generate(self, z, y=None):
            self.batches.append(len(z))
            time.sleep(0.2)  # the other requests queue up meanwhile
            return z[:, :1, None, None].repeat(1, 1, 2, 2)

    model = SlowModel()
    worker = DecodeWorker(model)
    with ThreadPoolExecutor(12) as pool:
        outs = list(pool.map(lambda k: worker.decode(np.full((1, 3), k, np.float32)), range(12)))
    worker.close()
    assert [float(o[0, 0, 0, 0]) for o in outs] == list(range(12))  # each caller gets its own image back
    assert sum(model.batches) == 12 and max(model.batches) > 1 and len(model.batches) < 12


# -- the app: routes, bad values, safety --------------------------------------------------------------------
class App:
    def __init__(self, server):
        self.server = server
        self.host, self.port = server.server_address[:2]

    def get(self, path: str):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def json(self, path: str):
        status, _, body = self.get(path)
        return status, json.loads(body)


def start_app(run, **kwargs):
    from vaelab import load_run
    from vaelab.explore import Explorer, make_server

    server = make_server(Explorer(load_run(run), **kwargs), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return App(server)


@pytest.fixture(scope="module")
def app(tiny_run):
    a = start_app(tiny_run, cache=False)
    yield a
    a.server.shutdown()
    a.server.server_close()


def test_app_serves_the_page_the_map_and_decoded_images(app):
    status, headers, body = app.get("/")
    assert status == 200 and b"/static/app.js" in body and b"http" not in body.replace(b"http-equiv", b"")  # no CDN
    assert app.get("/static/app.js")[0] == 200 and app.get("/static/app.css")[0] == 200
    status, info = app.json("/api/info")
    assert status == 200 and info["method"] == "identity" and info["latent_dim"] == 2
    assert len(info["xy"]) == info["n"] == len(info["labels"]) and info["class_names"] == ["1", "4", "8"]
    status, headers, png = app.get("/api/decode?z=0.5,-1")
    assert status == 200 and png.startswith(PNG) and headers["Content-Type"] == "image/png"
    status, headers, png_i = app.get("/api/decode?i=3")
    np.testing.assert_allclose([float(v) for v in headers["X-Latent"].split(",")], info["xy"][3], atol=1e-3)
    status, headers, png_at = app.get(f"/api/decode?at={info['xy'][3][0]},{info['xy'][3][1]}")
    assert status == 200 and png_at == png_i  # the 2-D latent is its own map
    assert app.get("/api/decode?i=3&shift=3,3")[2] != png_i
    assert app.get("/api/image?i=0")[2].startswith(PNG)
    for path in ("/api/interpolate?a=0&b=5&steps=6&mode=slerp", "/api/samples?sampler=prior&n=4", "/api/samples?sampler=gmm&n=4&seed=2"):
        status, _, body = app.get(path)
        assert status == 200 and body.startswith(PNG), path
    status, vec = app.json("/api/attribute?from=0&to=2")
    assert status == 200 and len(vec["vector"]) == 2 and vec["norm"] > 0
    status, vec_sets = app.json("/api/attribute?from_set=0,1&to_set=7")
    assert status == 200 and len(vec_sets["vector"]) == 2


@pytest.mark.parametrize("path", [
    "/api/decode?z=1", "/api/decode?z=1,2,3", "/api/decode?z=1,nan", "/api/decode?z=1,inf", "/api/decode?z=a,b",
    "/api/decode", "/api/decode?z=1,2&i=3", "/api/decode?i=-1", "/api/decode?i=100000", "/api/decode?i=x",
    "/api/decode?at=1", "/api/decode?z=1e30,0", "/api/decode?z=1,2&shift=1",
    "/api/image?i=99999", "/api/image", "/api/interpolate?a=0", "/api/interpolate?a=0&b=1&mode=cubic",
    "/api/interpolate?a=0&b=1&steps=1000", "/api/attribute?from=0", "/api/attribute?from=9&to=0",
    "/api/attribute?from_set=&to_set=1", "/api/attribute?from_set=0,x&to_set=1", "/api/samples?n=0",
    "/api/samples?n=100000", "/api/samples?sampler=flow", "/api/samples?temperature=-1", "/api/decode?z=1,2&z=3,4",
])
def test_bad_query_values_get_a_400_with_a_message(app, path):
    status, body = app.json(path)
    assert status == 400, path
    assert isinstance(body["error"], str) and 5 < len(body["error"]) < 300


@pytest.mark.parametrize("path", [
    "/static/../../../../etc/passwd", "/static/..%2f..%2f..%2fetc%2fpasswd", "/static/%2e%2e/%2e%2e/etc/passwd",
    "/../../etc/passwd", "//etc/passwd", "/static//etc/passwd", "/static/../config.yaml", "/config.yaml",
    "/checkpoints/best.ckpt", "/static/../../server.py", "/static/", "/api/../../etc/passwd",
])
def test_path_traversal_serves_nothing_but_the_apps_files(app, path):
    # raw request line: http.client sends the path as is (no normalisation of '..')
    status, _, body = app.get(path)
    assert status == 404, path
    assert b"root:" not in body and b"model:" not in body


def test_a_foreign_host_header_is_refused(app):
    conn = http.client.HTTPConnection(app.host, app.port, timeout=30)
    conn.request("GET", "/api/info", headers={"Host": "evil.example:8765"})
    assert conn.getresponse().status == 403  # DNS rebinding: another site's name pointed at 127.0.0.1
    conn.close()


def test_the_server_survives_a_burst_of_1000_requests(app):
    rng = np.random.default_rng(0)
    paths = [f"/api/decode?z={a:.3f},{b:.3f}" for a, b in rng.normal(size=(1000, 2))]
    with ThreadPoolExecutor(48) as pool:
        results = list(pool.map(app.get, paths))
    assert [r[0] for r in results] == [200] * 1000
    assert all(r[2].startswith(PNG) for r in results)
    assert app.get("/api/info")[0] == 200


def test_the_server_survives_clients_that_hang_up_or_stall(app):
    addr = (app.host, app.port)
    for payload in (b"GET /api/decode?z=0,0 HT", b"GET /api/samples?n=256 HTTP/1.0\r\n\r\n", b""):
        s = socket.create_connection(addr)
        s.sendall(payload)
        s.close()  # mid-request, or before reading the answer
    s = socket.create_connection(addr)  # hang up while a big answer is being written
    s.sendall(b"GET /api/samples?n=256&sampler=prior HTTP/1.0\r\n\r\n")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    stalled = [socket.create_connection(addr) for _ in range(5)]  # connected, never send a byte
    try:
        assert app.get("/api/decode?z=0,0")[0] == 200
    finally:
        for s in stalled:
            s.close()
    assert app.get("/api/info")[0] == 200


def test_conditional_app_needs_a_class_and_pca_and_tsne_maps(tiny_conditional_run):
    a = start_app(tiny_conditional_run, cache=False, method="pca")
    try:
        status, info = a.json("/api/info")
        assert info["conditional"] and info["method"] == "pca" and info["inverse"] == "pca-inverse"
        assert a.json("/api/decode?z=0,0")[0] == 400  # no class
        assert a.json("/api/decode?z=0,0&label=9")[0] == 400
        pngs = {a.get(f"/api/decode?z=0,0&label={k}")[2] for k in range(3)}
        assert len(pngs) == 3  # the class selector changes the image
        assert a.get("/api/samples?sampler=gmm&n=3&label=1")[0] == 200
    finally:
        a.server.shutdown()
        a.server.server_close()


def test_unlabelled_images_get_picked_sets_instead_of_classes(tiny_run):
    from vaelab import load_run
    from vaelab.data import ImageSet

    images = load_run(tiny_run).data().split("val").images[:20]
    a = start_app(tiny_run, data=ImageSet(images, source="unlabelled"), method="pca")
    try:
        status, info = a.json("/api/info")
        assert info["labels"] is None and info["n"] == 20 and info["split"] == "train"
        assert a.server.explorer.cache_path is None
        status, body = a.json("/api/attribute?from=0&to=1")
        assert status == 400 and "no labels" in body["error"]
        assert a.json("/api/attribute?from_set=0,1&to_set=2,3")[0] == 200
    finally:
        a.server.shutdown()
        a.server.server_close()


def test_the_map_is_cached_in_the_run(tiny_run, tmp_path):
    from vaelab import load_run
    from vaelab.explore import Explorer

    run = copy_run(tiny_run, tmp_path)
    first = Explorer(load_run(run), method="tsne")
    assert not first.cached and first.cache_path.is_file() and first.cache_path.parent == run / "explore"
    second = Explorer(load_run(run), method="tsne")
    assert second.cached
    np.testing.assert_array_equal(first.projection.xy, second.projection.xy)
    first.close()
    second.close()


def test_explore_command_prints_the_url_and_stops_cleanly_on_ctrl_c(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vaelab", "explore", str(run), "--port", "0", "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "http://" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert "http://127.0.0.1:" in line, proc.stderr.read() if proc.poll() is not None else line
        url = line.split("http://", 1)[1].split()[0]
        host, port = url.rstrip("/").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", "/api/info")
        assert conn.getresponse().status == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped" in out and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_explore_command_rejects_a_busy_port_and_bad_options(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        assert cli("explore", run, "--port", str(busy.getsockname()[1]), "--no-browser") == 2
        assert "in use" in capsys.readouterr().err
    finally:
        busy.close()
    assert cli("explore", run, "--method", "isomap", "--no-browser") == 2
    try:
        import umap  # noqa: F401
    except ImportError:
        assert cli("explore", run, "--method", "umap", "--no-browser") == 2
        assert "umap-learn" in capsys.readouterr().err
    assert cli("explore", run, "--split", "nope", "--no-browser") == 2


# -- in a real browser ---------------------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _has_playwright() -> bool:
    import importlib.util

    return importlib.util.find_spec("playwright") is not None


def _decoded_pixels(page) -> str:
    return page.evaluate("""() => { const img = document.getElementById('decoded');
        const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
        c.getContext('2d').drawImage(img, 0, 0); return c.toDataURL(); }""")


def _after_decode(page, action) -> str:
    seq = page.get_attribute("#decoded", "data-seq")
    action()
    # the image changed and no decode is in flight or queued (S is the page's state)
    page.wait_for_function(f"document.getElementById('decoded').dataset.seq !== '{seq}' && !S.busy && !S.pending", timeout=20000)
    return _decoded_pixels(page)


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Debian's chromium is not installed (apt-get install -y chromium)")
@pytest.mark.skipif(not _has_playwright(), reason="playwright is not installed (pip install playwright; no browser download)")
def test_the_app_works_in_headless_chromium(app, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            problems, outside = [], []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((f"http://{app.host}:{app.port}/", "blob:", "data:")) else None)
            page.goto(f"http://{app.host}:{app.port}/")
            page.wait_for_selector('#map[data-ready="1"]', timeout=20000)
            page.wait_for_function("document.getElementById('decoded').dataset.seq !== '0' && !S.busy && !S.pending", timeout=20000)
            box = page.locator("#map").bounding_box()
            first = _after_decode(page, lambda: page.mouse.click(box["x"] + 0.15 * box["width"], box["y"] + 0.15 * box["height"]))
            second = _after_decode(page, lambda: page.mouse.click(box["x"] + 0.85 * box["width"], box["y"] + 0.8 * box["height"]))
            assert first != second  # two points of the map decode to different images
            slider = page.locator("#z0")
            slider.focus()
            moved = _after_decode(page, lambda: page.keyboard.press("Home"))
            assert moved != second  # the traversal slider changes the image
            def drag():
                page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.8 * box["height"])
                page.mouse.down()
                page.mouse.move(box["x"] + 0.7 * box["width"], box["y"] + 0.3 * box["height"], steps=8)
                page.mouse.up()

            dragged = _after_decode(page, drag)
            assert dragged != moved  # dragging decodes live
            dot = page.evaluate("""() => { const c = document.getElementById('map'), r = c.getBoundingClientRect();
                const p = toPx(S.info.xy[7][0], S.info.xy[7][1]);
                return [r.left + p[0] * r.width / c.width, r.top + p[1] * r.height / c.height]; }""")
            page.mouse.move(*dot)  # hovering a dot shows its image
            page.wait_for_function("!document.getElementById('tooltip').hidden && document.getElementById('tipimg').complete"
                                   " && document.getElementById('tipimg').naturalWidth === 28", timeout=20000)
            assert page.eval_on_selector_all("#sampler option", "os => os.map(o => o.value)")[:2] == ["prior", "gmm"]
            page.select_option("#sampler", "gmm")
            page.click("#sample")  # samples from the sampler the run offers
            page.wait_for_function("document.getElementById('samples').complete && document.getElementById('samples').naturalWidth > 28", timeout=20000)
            page.screenshot(path=str(tmp_path / "explore.png"))
            assert not problems, problems
            assert not outside, outside  # everything comes from the app
        finally:
            browser.close()


# -- every family, pretrained folders, the umap extra (issue 25 audit) ----------------------------------------
def _tiny_family(tmp_path_factory, name: str, *overrides: str) -> Path:
    from conftest import tiny_config
    from vaelab.train import fit

    root = tmp_path_factory.mktemp(f"family-{name}")
    cfg = tiny_config(root, "train.epochs=1", "data.limit=150", "model.latent_dim=3", f"name={name}", *overrides)
    return Path(fit(cfg, quiet=True)["run_dir"])


@pytest.fixture(scope="module")
def tiny_vq_run(tmp_path_factory) -> Path:
    return _tiny_family(tmp_path_factory, "vq", "model.latent=vq", "model.objective=vq", "model.latent_dim=4",
                        "model.code_dim=2", "model.codebook_size=8")


FAMILIES = {
    "iwae": ["model.objective=iwae"],
    "iaf": ["model.posterior=iaf"],
    "rae": ["model.objective=rae"],  # a deterministic (delta) encoder
    "vamp": ["model.prior=vamp", "model.prior_components=3"],
    "two-layers": ["model.stochastic_layers=2", "model.layer_hidden=[16]"],
    "class-prior": ["model.prior=class", "model.conditional=true"],
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_explores(family, tmp_path_factory):
    from vaelab import load_run
    from vaelab.explore import Explorer

    ex = Explorer(load_run(_tiny_family(tmp_path_factory, family, *FAMILIES[family])), cache=False)
    try:
        info = ex.info()
        label = 0 if info["conditional"] else None
        assert info["quantized"] is None and info["slerp"] and set(info["samplers"]) == {"prior", "gmm"}
        a, b = ex.decode_png(ex.at(info["xy"][0]), label), ex.decode_png(ex.at(info["xy"][1]), label)
        assert a.startswith(PNG) and b.startswith(PNG)
        assert ex.interpolation_png(0, 1, 4, "slerp", label).startswith(PNG)
        for sampler in ("prior", "gmm"):
            assert ex.samples_png(sampler, 4, 0, label).startswith(PNG)
    finally:
        ex.close()


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")  # a GMM on a few discrete codes
def test_vq_codes_decode_through_the_codebook_and_sample_from_the_code_prior(tiny_vq_run, tmp_path):
    import torch

    from vaelab import load_run
    from vaelab.errors import VaelabError
    from vaelab.explore import Explorer
    from vaelab.latent.edit import edit, snap

    run = copy_run(tiny_vq_run, tmp_path)
    r = load_run(run)
    q = r.model.quantizer
    ex = Explorer(r, cache=False)
    try:
        info = ex.info()
        assert info["quantized"] == {"codebook_size": 8, "code_dim": 2, "positions": 2} and not info["slerp"]
        # a point between codes decodes as its nearest code map: snapped codes are codebook entries
        z = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
        snapped = snap(r.model, z)
        book = q.codebook.detach().numpy()
        assert all(np.abs(book - v).sum(1).min() < 1e-6 for v in snapped.reshape(-1, 2))
        np.testing.assert_array_equal(ex.decode(z).numpy(), ex.decode(snapped).numpy())
        np.testing.assert_array_equal(snap(r.model, snapped), snapped)
        assert ex.decode(z + 1e-3).numpy().tobytes() == ex.decode(z).numpy().tobytes()  # the image changes in steps
        with pytest.raises(VaelabError, match="Gaussian latent"):
            ex.interpolation_png(0, 1, 4, "slerp")
        assert set(info["samplers"]) == {"gmm"} and "train-prior" in info["sampler_note"]
        for name, text in (("prior", "no Gaussian prior"), ("vq-prior", "no code prior")):
            with pytest.raises(VaelabError, match=text) as e:
                ex.samples_png(name, 4)
            assert "train-prior" in str(e.value) and "\n" not in str(e.value)
        assert ex.samples_png("gmm", 4).startswith(PNG)
        out = edit(r, r.data().split("val").images[:2], "1", "8", strength=0.7)
        np.testing.assert_array_equal(out.z, snap(r.model, torch.as_tensor(out.z)).numpy())
    finally:
        ex.close()
    assert cli("train-prior", run, "--epochs", "1", "--width", "8", "--layers", "1") == 0
    ex = Explorer(load_run(run), cache=False)
    try:
        assert list(ex.info()["samplers"]) == ["vq-prior", "gmm"] and ex.info()["sampler_note"] is None
        assert ex.samples_png("vq-prior", 4, seed=1) == ex.samples_png("vq-prior", 4, seed=1)
    finally:
        ex.close()


def test_gmm_samples_are_fitted_once_and_seeded_per_draw(tiny_run, tmp_path):
    import shutil

    from vaelab import load_run
    from vaelab.explore import Explorer

    run = copy_run(tiny_run, tmp_path)
    shutil.rmtree(run / "samplers", ignore_errors=True)  # other tests may have fitted samplers in the shared run
    ex = Explorer(load_run(run), method="pca")
    try:
        first = ex.samples_png("gmm", 6, seed=1)
        assert ex.samples_png("gmm", 6, seed=2) != first and ex.samples_png("gmm", 6, seed=1) == first
        assert list(ex._samplers) == ["gmm"] and (run / "samplers" / "gmm.safetensors").is_file()  # shared with vaelab sample
        assert "maf" not in ex.info()["samplers"]
    finally:
        ex.close()
    assert cli("sample", run, "-n", "2", "--sampler", "maf", "--out", tmp_path / "maf.png") == 0
    ex = Explorer(load_run(run), method="pca")
    try:  # a MAF fitted by vaelab sample is offered too
        assert list(ex.info()["samplers"]) == ["prior", "gmm", "maf"] and ex.samples_png("maf", 4, seed=1).startswith(PNG)
    finally:
        ex.close()


def test_a_pretrained_folder_explores_and_edits(tiny_run, tmp_path, capsys):
    from PIL import Image

    from vaelab import load_run

    folder = load_run(tiny_run).save_pretrained(tmp_path / "pretrained")
    a = start_app(folder)
    try:
        status, info = a.json("/api/info")
        assert status == 200 and info["n"] > 2 and (folder / "explore").is_dir()
        assert a.get("/api/decode?at=0.5,-0.5")[2].startswith(PNG)
        assert a.get("/api/samples?sampler=gmm&n=4")[0] == 200
    finally:
        a.server.shutdown()
        a.server.server_close()
    img = load_run(folder).data().split("val").images[0, 0].numpy()
    Image.fromarray(img).save(tmp_path / "digit.png")
    assert cli("edit", folder, tmp_path / "digit.png", "--from", "1", "--to", "8", "--out", tmp_path / "e.png") == 0


def test_the_umap_map_without_umap_learn_names_the_extra(monkeypatch):
    from vaelab import extras
    from vaelab.errors import VaelabError
    from vaelab.latent.project import project

    monkeypatch.setattr(extras, "missing", lambda extra: ["umap"] if extra == "umap" else [])
    with pytest.raises(VaelabError) as e:
        project(np.random.default_rng(0).normal(size=(10, 3)), "umap")
    assert "umap-learn" in str(e.value) and "vaelab[umap]" in str(e.value) and "\n" not in str(e.value)


def test_ctrl_c_with_requests_in_flight_stops_without_a_traceback(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vaelab", "explore", str(run), "--port", "0", "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stop = threading.Event()
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "http://" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        host, port = line.split("http://", 1)[1].split()[0].rstrip("/").split(":")
        answered = []

        def hammer(k: int):
            i = 0
            while not stop.is_set():
                try:
                    conn = http.client.HTTPConnection(host, int(port), timeout=5)
                    conn.request("GET", f"/api/decode?z={k / 10},{i / 100}")
                    answered.append(conn.getresponse().status)
                    conn.close()
                except OSError:
                    pass
                i += 1

        clients = [threading.Thread(target=hammer, args=(k,), daemon=True) for k in range(8)]
        for c in clients:
            c.start()
        while len(answered) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # while 8 clients keep asking
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "stopped" in out, err
        assert "Traceback" not in err and "Exception" not in err, err
        assert set(answered) == {200}
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
