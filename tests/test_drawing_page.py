"""The drawing page of the bundled model server (`export.serve --drawing_page`,
export/static/, docs/DRAWING_PAGE.md).

Fast tier: the page and its assets are served on the REST port with the right content
types and no reference to another origin; the page is off unless asked for and needs a
REST port.

Slow tier: a real headless Chromium (the system's: Debian's `chromium` package; nothing
is downloaded) driven over the Chrome DevTools Protocol with a small client below
(`websocket-client`). It opens the page served by `python -m export.serve
--drawing_page`, draws examples with real pointer input (mouse, and touch for one),
generates, and checks the rendered samples pixel for pixel against the REST API, their
determinism, the error display and dropped image files. Without a Chromium binary these
tests skip, except in CI (CI=true), where they fail.

Options (environment):
  TFMETA_CHROMIUM=<binary>            the browser (default: chromium, chromium-browser,
                                      google-chrome on PATH)
  TFMETA_DRAWING_PAGE_MODEL=<base>/<name>  serve this exported model instead of the toy
  TFMETA_DRAWING_PAGE_STEPS=<int>     adaptation steps the page asks for (default 2)
  TFMETA_DRAWING_PAGE_SCREENSHOT=<png>  save a screenshot of the page after generating
                                      (docs/images/drawing_page.png is made this way)
"""

import base64
import http.client
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import types
import urllib.request

import numpy as np
import pytest
from PIL import Image, ImageDraw

from export.rest import STATIC_DIR
from export.serve import ModelServer
from fakes import serve_cli
from tfmeta.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_SAMPLES = 16
_EXTERNAL = re.compile(rb"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", re.IGNORECASE)


# -- fast tier ------------------------------------------------------------------------------
def _get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_page_and_assets_served_offline(serving_toy_base):
    server = ModelServer({"toy": os.path.join(serving_toy_base, "toy")}, port=0,
                         rest_api_port=0, drawing_page=True, max_num_samples=MAX_SAMPLES)
    server.start()
    try:
        port = server.rest_api_port
        for path in ("/", "/draw"):
            status, headers, _ = _get(port, path)
            assert status == 302 and headers["Location"] == "/draw/", path
        status, headers, _ = _get(port, "/?model=toy")
        assert status == 302 and headers["Location"] == "/draw/?model=toy"
        status, headers, html = _get(port, "/draw/")
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert "connect-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assets = re.findall(rb'(?:src|href)="([^"]+)"', html)
        assert sorted(assets) == [b"draw.css", b"draw.js"]  # relative, same origin
        types_ = {b"draw.js": "text/javascript; charset=utf-8",
                  b"draw.css": "text/css; charset=utf-8"}
        bodies = {"draw.html": html}
        for asset in assets:
            status, headers, body = _get(port, "/draw/" + asset.decode())
            assert status == 200 and headers["Content-Type"] == types_[asset], asset
            assert int(headers["Content-Length"]) == len(body) > 1000
            bodies[asset.decode()] = body
        # Every file of the page, served or shipped, names no other origin (works offline).
        for name in os.listdir(STATIC_DIR):
            with open(os.path.join(STATIC_DIR, name), "rb") as f:
                bodies.setdefault(name, f.read())
        for name, body in bodies.items():
            assert not _EXTERNAL.search(body), (name, _EXTERNAL.search(body).group())
            assert b"@import" not in body and b"url(" not in body, name
        # What the page reads first: the served models and the limits.
        status, headers, body = _get(port, "/draw/models.json")
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"models": ["toy"], "max_num_samples": MAX_SAMPLES,
                                    "max_steps": 1000, "max_support": 256}
        # Only the page's own files; the REST API is unchanged beside it.
        for path in ("/draw/nope.js", "/draw/../rest.py", "/draw/%2e%2e/rest.py",
                     "/draw/static/draw.js"):
            status, headers, body = _get(port, path)
            assert status == 404 and "error" in json.loads(body), path
        status, _, body = _get(port, "/v1/models/toy")
        assert status == 200 and json.loads(body)["model_version_status"][0]["state"] == \
            "AVAILABLE"
        status, _, body = _get(port, "/v1/models/toy/metadata")
        dims = json.loads(body)["metadata"]["signature_def"]["signature_def"][
            "adapt_and_sample"]["inputs"]["support_images"]["tensor_shape"]["dim"]
        assert [d["size"] for d in dims] == ["-1", "28", "28", "1"]  # what the page reads
    finally:
        server.stop(grace=1)


def test_page_is_off_by_default_and_needs_the_rest_port(serving_toy_base):
    base = os.path.join(serving_toy_base, "toy")
    with pytest.raises(ConfigError, match="--rest_api_port"):
        ModelServer({"toy": base}, port=0, drawing_page=True)
    server = ModelServer({"toy": base}, port=0, rest_api_port=0)
    server.start()
    try:
        for path in ("/", "/draw/", "/draw/draw.js"):
            status, headers, _ = _get(server.rest_api_port, path)
            assert status == 404 and headers["Content-Type"] == "application/json", path
    finally:
        server.stop(grace=1)
    proc = subprocess.run(
        [sys.executable, "-m", "export.serve", "--model_base_path", base, "--port", "0",
         "--drawing_page"], cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode != 0
    assert "drawing page" in proc.stderr and "--rest_api_port" in proc.stderr, \
        proc.stderr[-2000:]


# -- slow tier: a real browser ----------------------------------------------------------------
def _unavailable(reason):
    """Skip, or fail in CI (CI=true), where the browser tests must run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI must run the browser tests: .ci/run installs Chromium)")
    pytest.skip(reason)


def _chromium_binary():
    wanted = os.environ.get("TFMETA_CHROMIUM")
    if wanted:
        found = shutil.which(wanted)
        if not found:
            _unavailable(f"TFMETA_CHROMIUM={wanted!r} is not an executable")
        return found
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """A headless Chromium and one page, driven over the Chrome DevTools Protocol."""

    def __init__(self, binary, profile_dir, width=1100, height=900):
        import websocket

        self.width, self.height = width, height
        self.log = open(os.path.join(profile_dir, "..", "chromium.log"), "wb")
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--disable-sync",
             "--disable-component-update", "--mute-audio", "--hide-scrollbars",
             "--force-device-scale-factor=1", f"--window-size={width},{height}",
             f"--user-data-dir={profile_dir}", "--remote-debugging-port=0", "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT)
        port_file = os.path.join(profile_dir, "DevToolsActivePort")
        deadline = time.monotonic() + 120
        port = None
        while port is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"Chromium did not start (exit {self.proc.returncode}): "
                                   f"{self.log_tail()}")
            try:
                with open(port_file) as f:
                    port = int(f.readline())
            except (OSError, ValueError):
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=120,
                                              suppress_origin=True)
        self._id = 0
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.send("Emulation.setTouchEmulationEnabled", enabled=True, maxTouchPoints=1)

    def log_tail(self):
        self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read()[-2000:].decode("utf-8", "replace")

    def close(self):
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def send(self, method, **params):
        """One CDP command -> its result (events in between are dropped)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression):
        """A JavaScript expression's value (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(f"{expression[:200]}: "
                               f"{details.get('exception', {}).get('description', details)}")
        return result["result"].get("value")

    def wait_for(self, expression, timeout=120, what=None):
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                state = self.evaluate("JSON.stringify({state: document.body && "
                                      "document.body.dataset.state, error: "
                                      "(document.getElementById('error') || {}).textContent})")
                raise AssertionError(f"timed out waiting for {what or expression}: {state}")
            time.sleep(0.05)

    def open(self, url):
        self.evaluate("window.previousPage = true")  # gone once the new page is there
        self.send("Page.navigate", url=url)
        self.wait_for("!window.previousPage && document.readyState === 'complete' && "
                      "!!window.tfmetaDrawPage && "
                      "['ready', 'error'].includes(document.body.dataset.state)",
                      what="the page to load")

    def press_generate(self):
        """Clicks Generate; -> the page's state once it has answered ('done', 'error')."""
        self.evaluate("document.body.dataset.state = 'pressed'")  # the page overwrites it
        self.click("#generate")
        return self.wait_for("['done', 'error'].includes(document.body.dataset.state) && "
                             "document.body.dataset.state", what="Generate to finish")

    def center(self, selector):
        box = self.evaluate(f"(() => {{ const r = document.querySelector({selector!r})"
                            ".getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; "
                            "})()")
        return box[0] + box[2] / 2, box[1] + box[3] / 2, box

    def click(self, selector):
        x, y, _ = self.center(selector)
        for kind, buttons in (("mouseMoved", 0), ("mousePressed", 1), ("mouseReleased", 0)):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      buttons=buttons, clickCount=1)

    def draw(self, selector, strokes, touch=False):
        """Draws polylines (points in [0, 1]^2 of the element's box) with real input
        events: mouse drags, or touches."""
        _, _, (left, top, width, height) = self.center(selector)
        for stroke in strokes:
            points = [(left + x * width, top + y * height) for x, y in stroke]
            if touch:
                self.send("Input.dispatchTouchEvent", type="touchStart",
                          touchPoints=[{"x": points[0][0], "y": points[0][1]}])
                for x, y in points[1:]:
                    self.send("Input.dispatchTouchEvent", type="touchMove",
                              touchPoints=[{"x": x, "y": y}])
                self.send("Input.dispatchTouchEvent", type="touchEnd", touchPoints=[])
                continue
            (x0, y0), (xn, yn) = points[0], points[-1]
            self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x0, y=y0)
            self.send("Input.dispatchMouseEvent", type="mousePressed", x=x0, y=y0,
                      button="left", buttons=1, clickCount=1)
            for x, y in points[1:]:
                self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y,
                          button="left", buttons=1)
            self.send("Input.dispatchMouseEvent", type="mouseReleased", x=xn, y=yn,
                      button="left", buttons=0, clickCount=1)

    def set_value(self, element_id, value):
        self.evaluate(f"(() => {{ const e = document.getElementById({element_id!r}); "
                      f"e.value = {json.dumps(str(value))}; "
                      "e.dispatchEvent(new Event('input', {bubbles: true})); "
                      "e.dispatchEvent(new Event('change', {bubbles: true})); })()")

    def screenshot(self, path):
        """A PNG of the page down to the end of its content (taller than the window
        if need be)."""
        height = int(self.evaluate("Math.ceil(document.querySelector('main')"
                                   ".getBoundingClientRect().bottom + 16)"))
        self.send("Emulation.setDeviceMetricsOverride", width=self.width,
                  height=max(height, self.height), deviceScaleFactor=1, mobile=False)
        try:
            data = self.send("Page.captureScreenshot", format="png", clip={
                "x": 0, "y": 0, "width": self.width, "height": height, "scale": 1})["data"]
        finally:
            self.send("Emulation.setDeviceMetricsOverride", width=self.width,
                      height=self.height, deviceScaleFactor=1, mobile=False)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        import websocket  # noqa: F401  (websocket-client, the `dev` extra)
    except ImportError:
        _unavailable("websocket-client is not installed (pip install -e '.[dev]')")
    binary = _chromium_binary()
    if binary is None:
        _unavailable("no Chromium binary found (apt-get install chromium, or set "
                     "TFMETA_CHROMIUM)")
    profile = tmp_path_factory.mktemp("chromium") / "profile"
    profile.mkdir()
    chromium = Chromium(binary, str(profile))
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    """`python -m export.serve --drawing_page` (the CLI) serving a toy, or
    $TFMETA_DRAWING_PAGE_MODEL.

    The toy is the serving tests' module with a gentler inner learning rate (0.1) than
    the shared export's (2.0, whose single step already drives every pixel to 0), so that
    its samples after a few steps still have grey levels and depend on the drawings.
    """
    base = os.environ.get("TFMETA_DRAWING_PAGE_MODEL")
    if not base:
        from export.export_saved_model import export_generative_module
        from serving_toy import ToyGenerativeModule

        models = str(tmp_path_factory.mktemp("page_models"))
        export_generative_module(ToyGenerativeModule(inner_lr=0.1), models, "toy")
        base = os.path.join(models, "toy")
    name = os.path.basename(os.path.normpath(base))
    log = open(tmp_path_factory.mktemp("serve") / "stderr.log", "w+")
    try:
        with serve_cli(["--model_base_path", base, "--port", "0", "--rest_api_port", "-1",
                        "--drawing_page", "--max_num_samples", str(MAX_SAMPLES)],
                       stderr=log) as (_, announced):
            url = announced.get("page")
            if url is None:
                log.seek(0)
                raise RuntimeError(f"the server printed no page URL: {log.read()[-3000:]}")
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/draw/", url), url  # loopback
            yield types.SimpleNamespace(url=url, root=url[:-len("draw/")], name=name,
                                        rest_port=announced["rest"])
    finally:
        log.close()


def _symbol(example):
    """Strokes (polylines in [0, 1]^2) of one made-up symbol, example `example`: the same
    three strokes, each example slightly rotated, scaled, shifted and wobbly, as a hand
    would draw them."""
    rng = np.random.default_rng(example)
    angle, scale = rng.uniform(-0.12, 0.12), rng.uniform(0.88, 1.08)
    shift = rng.uniform(-0.05, 0.05, size=2)
    arc = [(0.38 + 0.25 * math.sin(t), 0.42 - 0.17 * math.cos(t))
           for t in np.linspace(0, math.pi, 12)]
    strokes = [
        [(0.38, 0.22), (0.38, 0.5), (0.37, 0.8)],                 # stem
        arc,                                                      # bowl
        [(0.42, 0.6), (0.55, 0.68), (0.72, 0.8)],                 # leg
    ]
    out = []
    for stroke in strokes:
        points = []
        for a, b in zip(stroke[:-1], stroke[1:]):  # ~0.02 apart, as a pointer reports
            steps = max(2, int(math.dist(a, b) / 0.02))
            points += [(a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)
                       for t in np.linspace(0, 1, steps, endpoint=False)]
        points.append(stroke[-1])
        xy = np.array(points) - 0.5
        xy = xy @ np.array([[math.cos(angle), -math.sin(angle)],
                            [math.sin(angle), math.cos(angle)]]) * scale + 0.5 + shift
        xy += rng.normal(0, 0.004, size=xy.shape)
        out.append([tuple(p) for p in np.clip(xy, 0.03, 0.97)])
    return out


_SAMPLES_JS = """Array.from(document.querySelectorAll('#samples canvas')).map(c => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const red = [];
  for (let i = 0; i < d.length; i += 4) red.push(d[i]);
  return {height: c.height, width: c.width, shown: c.getBoundingClientRect().width,
          opaque: d.filter((v, i) => i % 4 === 3).every(v => v === 255), red: red};
})"""


def _generate(chromium, seed=None, num_samples=None):
    """Presses Generate; -> the rendered samples as uint8 [N, H, W] (canvas pixels)."""
    if seed is not None:
        chromium.set_value("seed", seed)
    if num_samples is not None:
        chromium.set_value("num-samples", num_samples)
    before = chromium.evaluate("tfmetaDrawPage.state.generation")
    state = chromium.press_generate()
    error = chromium.evaluate("document.getElementById('error').hidden ? '' : "
                              "document.getElementById('error').textContent")
    assert state == "done" and not error, error
    assert chromium.evaluate("tfmetaDrawPage.state.generation") == before + 1
    samples = chromium.evaluate(_SAMPLES_JS)
    for sample in samples:
        assert sample["opaque"] and sample["shown"] >= 3 * sample["width"]  # scaled up
    return np.array([np.reshape(s["red"], (s["height"], s["width"])) for s in samples],
                    np.uint8)


def _rest_predict(port, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/v1/models/" + body.pop("model") + ":predict",
                     body=json.dumps(body))
        response = conn.getresponse()
        assert response.status == 200
        return np.array(json.loads(response.read())["outputs"], np.uint8)
    finally:
        conn.close()


@pytest.mark.slow
def test_draw_generate_in_browser(browser, page_server):
    """Draws 3 examples (2 by mouse, 1 by touch), generates; the rendered samples are
    the REST API's images for the request the page sent, change with the seed and come
    back identical for the same seed."""
    steps = int(os.environ.get("TFMETA_DRAWING_PAGE_STEPS", "2"))
    browser.open(page_server.root)  # `/` redirects to the page
    assert browser.evaluate("location.pathname") == "/draw/"
    assert browser.evaluate("document.body.dataset.state") == "ready"
    assert browser.evaluate("document.getElementById('model').value") == page_server.name
    shape = browser.evaluate("tfmetaDrawPage.state.shape")
    height, width, channels = shape
    assert f"{height}\u00d7{width}\u00d7{channels}" in browser.evaluate(
        "document.getElementById('model-info').textContent")

    for slot in range(3):
        browser.draw(f".slot[data-index='{slot}'] .pad", _symbol(slot), touch=slot == 2)
    assert browser.evaluate("tfmetaDrawPage.state.slots.map(s => s.used)") == \
        [True, True, True, False, False]
    browser.set_value("steps", steps)
    first = _generate(browser, seed=5, num_samples=8)
    assert first.shape == (8, height, width)
    for image in first:  # each sample has content: several grey levels, not flat
        assert len(np.unique(image)) >= 8 and image.std() > 1, np.unique(image)
    assert len({image.tobytes() for image in first}) == len(first)  # 8 different samples

    # What the page sent: 3 drawings at the model's size, bright strokes on dark.
    sent = browser.evaluate("tfmetaDrawPage.state.lastRequest")
    assert sent["signature_name"] == "adapt_and_sample"
    assert {k: v for k, v in sent["inputs"].items() if k != "support_images"} == \
        {"num_samples": 8, "seed": 5, "steps": steps}
    support = np.array(sent["inputs"]["support_images"])
    assert support.shape == (3, height, width, channels) and support.max() <= 255
    for image in support:
        ink = (image > 64).mean()
        assert image.max() >= 200 and np.median(image) == 0 and 0.03 < ink < 0.4, ink
    # ... each the area average of its drawing (the pad: 280 x 280, grey strokes).
    pad = np.array(browser.evaluate(
        "Array.from(document.querySelector(\".slot[data-index='0'] .pad\").getContext('2d')"
        ".getImageData(0, 0, 280, 280).data.filter((v, i) => i % 4 === 0))"), float)
    if channels == 1 and 280 % height == 0 and 280 % width == 0:
        blocks = pad.reshape(height, 280 // height, width, 280 // width).mean(axis=(1, 3))
        assert np.abs(np.round(blocks) - support[0, ..., 0]).max() <= 1
    # The rendered canvases hold exactly the REST API's images for that request.
    replay = _rest_predict(page_server.rest_port, dict(sent, model=page_server.name))
    np.testing.assert_array_equal(first, replay[..., 0])

    second = _generate(browser, seed=6)
    assert second.shape == first.shape and not np.array_equal(first, second)
    again = _generate(browser, seed=5)
    np.testing.assert_array_equal(again, first)
    screenshot = os.environ.get("TFMETA_DRAWING_PAGE_SCREENSHOT")
    if screenshot:
        browser.screenshot(screenshot)


@pytest.mark.slow
def test_errors_shown_in_browser(browser, page_server):
    """The server's `error` text and HTTP code appear on the page (bad request, unknown
    model); so do the page's own checks (no drawing)."""
    browser.open(page_server.url)
    browser.draw(".slot[data-index='0'] .pad", _symbol(0))
    browser.set_value("num-samples", MAX_SAMPLES + 1)  # over the server's limit
    assert browser.press_generate() == "error"
    text = browser.evaluate("document.getElementById('error').textContent")
    assert "HTTP 400" in text and f"num_samples={MAX_SAMPLES + 1} is outside [1, " \
        f"{MAX_SAMPLES}]" in text, text
    assert browser.evaluate("document.getElementById('error').hidden") is False

    browser.set_value("model", "nope")
    browser.wait_for("document.body.dataset.state === 'error' && document.getElementById("
                     "'error').textContent.includes('nope')", what="an unknown-model error")
    text = browser.evaluate("document.getElementById('error').textContent")
    assert "HTTP 404" in text and "Servable not found" in text, text

    browser.set_value("model", page_server.name)
    browser.wait_for("document.body.dataset.state === 'ready'", what="the model again")
    assert browser.evaluate("document.getElementById('error').hidden") is True
    browser.click("#clear-all")
    assert browser.evaluate("tfmetaDrawPage.state.slots.some(s => s.used)") is False
    browser.set_value("num-samples", 2)
    assert browser.press_generate() == "error"
    assert "draw at least one example" in browser.evaluate(
        "document.getElementById('error').textContent")


@pytest.mark.slow
def test_dropped_image_file_in_browser(browser, page_server):
    """An image file dropped on an example slot becomes that example: dark ink on white
    paper (Omniglot's PNGs) arrives as bright strokes on dark."""
    paper = Image.new("L", (105, 105), 255)
    ImageDraw.Draw(paper).line([(20, 20), (85, 85)], fill=0, width=9)
    ImageDraw.Draw(paper).line([(20, 85), (85, 20)], fill=0, width=9)
    buffer = io.BytesIO()
    paper.save(buffer, format="PNG")
    png = base64.b64encode(buffer.getvalue()).decode()
    browser.open(page_server.url)
    browser.evaluate(f"""(() => {{
      const bytes = Uint8Array.from(atob({png!r}), c => c.charCodeAt(0));
      const transfer = new DataTransfer();
      transfer.items.add(new File([bytes], 'cross.png', {{type: 'image/png'}}));
      document.querySelector(".slot[data-index='3'] .pad").dispatchEvent(
        new DragEvent('drop', {{dataTransfer: transfer, bubbles: true, cancelable: true}}));
    }})()""")
    browser.wait_for("tfmetaDrawPage.state.slots[3].used", what="the dropped file")
    assert browser.evaluate("tfmetaDrawPage.state.slots.map(s => s.used)") == \
        [False, False, False, True, False]
    images = _generate(browser, seed=1, num_samples=2)
    assert images.shape[0] == 2
    support = np.array(browser.evaluate("tfmetaDrawPage.state.lastRequest")["inputs"][
        "support_images"])
    height, width = support.shape[1:3]
    assert support.shape[0] == 1
    cross = support[0, ..., 0]
    assert cross[height // 2, width // 2] >= 200  # the strokes cross in the middle: ink
    assert cross[0, 0] == 0 and cross[0, width // 2] == 0  # paper: dark
    diagonal = [cross[i, i] for i in range(height // 4, 3 * height // 4)]
    assert min(diagonal) >= 128, diagonal
