// The drawing page (draw.html), served by `python -m export.serve --drawing_page`.
//
// A person draws 1-5 examples of a symbol (pointer events: mouse, pen, touch) or drops
// image files; the page reads the model's image size from TF Serving's REST metadata
// (`GET /v1/models/{name}/metadata`: the `adapt_and_sample` signature's `support_images`
// shape [K, H, W, C]), downsamples each drawing to H x W (area average) as uint8 bright
// strokes on a dark background, posts
//   {"signature_name": "adapt_and_sample",
//    "inputs": {"support_images": [K][H][W][C], "num_samples": N, "seed": S, "steps": T}}
// to `POST /v1/models/{name}:predict`, and draws the returned uint8 images [N][H][W][C]
// onto canvases (one canvas pixel per image pixel, scaled up by CSS).
// No build step, no libraries, nothing loaded from another origin.
(function () {
  "use strict";

  var SLOTS = 5;          // examples at most
  var PAD = 280;          // drawing canvas resolution (pixels), shown at CSS --pad
  var SIGNATURE = "adapt_and_sample";

  var el = function (id) { return document.getElementById(id); };
  var ui = {
    model: el("model"), modelNames: el("model-names"), modelInfo: el("model-info"),
    examples: el("examples"), brush: el("brush"), clearAll: el("clear-all"),
    files: el("files"), numSamples: el("num-samples"), seed: el("seed"),
    newSeed: el("new-seed"), steps: el("steps"), generate: el("generate"),
    error: el("error"), status: el("status"), samples: el("samples"),
    dropHint: el("drop-hint"),
  };

  var state = {
    model: null,        // name whose metadata is loaded
    shape: null,        // [H, W, C] of its support images
    slots: [],          // {root, pad, ctx, preview, used}
    busy: false,
    generation: 0,      // completed generations (tests wait on it)
    lastRequest: null,  // the last predict body sent (tests replay it)
    limits: {},
  };

  function setState(name) { document.body.dataset.state = name; }

  // -- messages ------------------------------------------------------------------------
  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = false;
  }

  function clearError() {
    ui.error.textContent = "";
    ui.error.hidden = true;
  }

  function setStatus(text) { ui.status.textContent = text; }

  // -- HTTP ----------------------------------------------------------------------------
  // -> {ok, status, body (parsed JSON or null), text}; throws only when the server
  // cannot be reached.
  function request(method, url, payload) {
    var options = {method: method, headers: {}};
    if (payload !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(payload);
    }
    return fetch(url, options).then(function (response) {
      return response.text().then(function (text) {
        var body = null;
        try { body = JSON.parse(text); } catch (e) { body = null; }
        return {ok: response.ok, status: response.status, body: body, text: text};
      });
    });
  }

  function httpError(what, result) {
    var detail = result.body && typeof result.body.error === "string"
      ? result.body.error : (result.text || "").slice(0, 500);
    return what + ": HTTP " + result.status + "\n" + detail;
  }

  function unreachable(what, error) {
    return what + ": cannot reach the model server (" + error.message + ")";
  }

  function modelPath(name) {
    return "/v1/models/" + encodeURIComponent(name);
  }

  // -- model ---------------------------------------------------------------------------
  function loadModelNames() {
    return request("GET", "models.json").then(function (result) {
      if (!result.ok || !result.body || !Array.isArray(result.body.models)) return [];
      state.limits = result.body;
      ui.modelNames.replaceChildren();
      result.body.models.forEach(function (name) {
        var option = document.createElement("option");
        option.value = name;
        ui.modelNames.appendChild(option);
      });
      if (result.body.max_num_samples) ui.numSamples.max = result.body.max_num_samples;
      if (result.body.max_steps) ui.steps.max = result.body.max_steps;
      return result.body.models;
    }, function () { return []; });
  }

  // Reads H, W, C from the model's adapt_and_sample signature; -> true when usable.
  function loadModel(name) {
    name = name.trim();
    state.model = null;
    state.shape = null;
    ui.modelInfo.textContent = "";
    if (!name) {
      setState("ready");
      return Promise.resolve(false);
    }
    setState("loading");
    return request("GET", modelPath(name) + "/metadata").then(function (result) {
      if (ui.model.value.trim() !== name) return false;  // changed meanwhile
      if (!result.ok) {
        showError(httpError("model " + JSON.stringify(name), result));
        setState("error");
        return false;
      }
      var problem = null, shape = null;
      try {
        var signatures = result.body.metadata.signature_def.signature_def;
        var signature = signatures[SIGNATURE];
        if (!signature) {
          problem = "model " + JSON.stringify(name) + " has no " + SIGNATURE +
            " signature (it has: " + Object.keys(signatures).sort().join(", ") + ")";
        } else {
          var dims = (signature.inputs.support_images.tensor_shape.dim || [])
            .map(function (d) { return Number(d.size); });
          shape = dims.slice(1);
          if (dims.length !== 4 || !shape.every(function (d) { return d > 0; }) ||
              [1, 3].indexOf(shape[2]) < 0) {
            problem = "model " + JSON.stringify(name) + ": support_images has shape [" +
              dims.join(", ") + "]; this page needs [K, H, W, 1 or 3]";
          }
        }
      } catch (e) {
        problem = "model " + JSON.stringify(name) + ": unexpected metadata (" + e.message + ")";
      }
      if (problem) {
        showError(problem);
        setState("error");
        return false;
      }
      clearError();
      state.model = name;
      state.shape = shape;
      var version = result.body.model_spec && result.body.model_spec.version;
      ui.modelInfo.textContent = (version ? "version " + version + " \u00b7 " : "") +
        "images " + shape[0] + "\u00d7" + shape[1] + "\u00d7" + shape[2];
      state.slots.forEach(updatePreview);
      setState("ready");
      return true;
    }, function (error) {
      showError(unreachable("model " + JSON.stringify(name), error));
      setState("error");
      return false;
    });
  }

  // -- pixels --------------------------------------------------------------------------
  // Area-average resampling weights from `src` pixels to `dst`: for each output index,
  // [first source index, weights...] (the weights of one output sum to 1).
  function areaWeights(src, dst) {
    var scale = src / dst, out = [];
    for (var i = 0; i < dst; i++) {
      var a = i * scale, b = (i + 1) * scale;
      var first = Math.floor(a), last = Math.min(src, Math.ceil(b)), weights = [];
      for (var j = first; j < last; j++) {
        weights.push((Math.min(b, j + 1) - Math.max(a, j)) / scale);
      }
      out.push([first, weights]);
    }
    return out;
  }

  // A canvas -> Uint8Array [H * W * C] (row-major, channels last) of the model's size:
  // C = 1: luminance; C = 3: RGB. The drawing is bright on dark already.
  function downsample(canvas, shape) {
    var H = shape[0], W = shape[1], C = shape[2];
    var sw = canvas.width, sh = canvas.height;
    var rgba = canvas.getContext("2d").getImageData(0, 0, sw, sh).data;
    var planes = [];
    for (var c = 0; c < C; c++) planes.push(new Float32Array(sw * sh));
    for (var p = 0, q = 0; p < sw * sh; p++, q += 4) {
      if (C === 1) {
        planes[0][p] = 0.299 * rgba[q] + 0.587 * rgba[q + 1] + 0.114 * rgba[q + 2];
      } else {
        planes[0][p] = rgba[q]; planes[1][p] = rgba[q + 1]; planes[2][p] = rgba[q + 2];
      }
    }
    var cols = areaWeights(sw, W), rows = areaWeights(sh, H);
    var out = new Uint8Array(H * W * C);
    for (c = 0; c < C; c++) {
      var plane = planes[c], across = new Float32Array(sh * W);
      for (var y = 0; y < sh; y++) {
        for (var x = 0; x < W; x++) {
          var first = cols[x][0], weights = cols[x][1], sum = 0;
          for (var k = 0; k < weights.length; k++) {
            sum += weights[k] * plane[y * sw + first + k];
          }
          across[y * W + x] = sum;
        }
      }
      for (y = 0; y < H; y++) {
        var firstRow = rows[y][0], rowWeights = rows[y][1];
        for (x = 0; x < W; x++) {
          var total = 0;
          for (k = 0; k < rowWeights.length; k++) {
            total += rowWeights[k] * across[(firstRow + k) * W + x];
          }
          out[(y * W + x) * C + c] = Math.max(0, Math.min(255, Math.round(total)));
        }
      }
    }
    return out;
  }

  // Flat [H * W * C] -> nested [H][W][C] (the JSON of one support image).
  function nested(flat, shape) {
    var H = shape[0], W = shape[1], C = shape[2], image = [];
    for (var y = 0; y < H; y++) {
      var row = [];
      for (var x = 0; x < W; x++) {
        var start = (y * W + x) * C;
        row.push(Array.prototype.slice.call(flat, start, start + C));
      }
      image.push(row);
    }
    return image;
  }

  // Draws a uint8 image (nested [H][W][C], or flat with `shape`) onto `canvas`, one
  // canvas pixel per image pixel.
  function paint(canvas, image, shape) {
    var H = shape[0], W = shape[1], C = shape[2];
    canvas.width = W;
    canvas.height = H;
    var ctx = canvas.getContext("2d");
    var data = ctx.createImageData(W, H), rgba = data.data;
    var isNested = Array.isArray(image);
    for (var y = 0; y < H; y++) {
      for (var x = 0; x < W; x++) {
        var q = (y * W + x) * 4;
        for (var c = 0; c < 3; c++) {
          var channel = C === 1 ? 0 : c;
          rgba[q + c] = isNested ? image[y][x][channel] : image[(y * W + x) * C + channel];
        }
        rgba[q + 3] = 255;
      }
    }
    ctx.putImageData(data, 0, 0);
  }

  // -- drawing -------------------------------------------------------------------------
  function blank(slot) {
    slot.ctx.fillStyle = "#000";
    slot.ctx.fillRect(0, 0, PAD, PAD);
    slot.used = false;
    slot.root.classList.remove("used");
    updatePreview(slot);
  }

  function markUsed(slot) {
    slot.used = true;
    slot.root.classList.add("used");
  }

  function updatePreview(slot) {
    var shape = state.shape || [28, 28, 1];
    paint(slot.preview, downsample(slot.pad, shape), shape);
  }

  function padPoint(slot, event) {
    var rect = slot.pad.getBoundingClientRect();
    return [(event.clientX - rect.left) * PAD / rect.width,
            (event.clientY - rect.top) * PAD / rect.height];
  }

  function makeSlot(index) {
    var root = document.createElement("div");
    root.className = "slot";
    root.dataset.index = String(index);
    var pad = document.createElement("canvas");
    pad.className = "pad";
    pad.width = PAD;
    pad.height = PAD;
    pad.setAttribute("aria-label", "example " + (index + 1) + ": draw here");
    var under = document.createElement("div");
    under.className = "under";
    var preview = document.createElement("canvas");
    preview.className = "preview";
    preview.title = "what the model gets";
    var clear = document.createElement("button");
    clear.type = "button";
    clear.className = "clear";
    clear.textContent = "Clear";
    under.append(preview, clear);
    root.append(pad, under);
    ui.examples.appendChild(root);

    var slot = {root: root, pad: pad, ctx: pad.getContext("2d", {willReadFrequently: true}),
                preview: preview, used: false};
    var stroke = null;  // {id, last: [x, y]} while a pointer draws

    function segment(from, to) {
      var ctx = slot.ctx;
      ctx.strokeStyle = "#fff";
      ctx.fillStyle = "#fff";
      ctx.lineWidth = Number(ui.brush.value);
      ctx.lineCap = "round";
      ctx.lineJoin = "round";
      ctx.beginPath();
      if (from[0] === to[0] && from[1] === to[1]) {
        ctx.arc(to[0], to[1], ctx.lineWidth / 2, 0, 2 * Math.PI);
        ctx.fill();
      } else {
        ctx.moveTo(from[0], from[1]);
        ctx.lineTo(to[0], to[1]);
        ctx.stroke();
      }
    }

    pad.addEventListener("pointerdown", function (event) {
      if (event.pointerType === "mouse" && event.button !== 0) return;
      event.preventDefault();
      if (pad.setPointerCapture) {
        try { pad.setPointerCapture(event.pointerId); } catch (e) { /* synthetic ids */ }
      }
      var point = padPoint(slot, event);
      stroke = {id: event.pointerId, last: point};
      segment(point, point);
      markUsed(slot);
    });
    pad.addEventListener("pointermove", function (event) {
      if (!stroke || event.pointerId !== stroke.id) return;
      event.preventDefault();
      var events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
      if (!events.length) events = [event];
      events.forEach(function (e) {
        var point = padPoint(slot, e);
        segment(stroke.last, point);
        stroke.last = point;
      });
    });
    function end(event) {
      if (!stroke || event.pointerId !== stroke.id) return;
      stroke = null;
      updatePreview(slot);
    }
    pad.addEventListener("pointerup", end);
    pad.addEventListener("pointercancel", end);
    pad.addEventListener("lostpointercapture", end);
    clear.addEventListener("click", function () { blank(slot); });
    blank(slot);
    return slot;
  }

  // -- image files ---------------------------------------------------------------------
  // Puts an image into a slot, fitted and centred, as bright strokes on dark: a picture
  // with transparency uses its opacity as ink; an opaque one whose mean is bright (dark
  // ink on paper, e.g. Omniglot's PNGs) is inverted.
  function putImage(slot, bitmap) {
    var scale = Math.min(PAD / bitmap.width, PAD / bitmap.height);
    var w = Math.max(1, Math.round(bitmap.width * scale));
    var h = Math.max(1, Math.round(bitmap.height * scale));
    var work = document.createElement("canvas");
    work.width = w;
    work.height = h;
    var ctx = work.getContext("2d", {willReadFrequently: true});
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(bitmap, 0, 0, w, h);
    var data = ctx.getImageData(0, 0, w, h), rgba = data.data, n = w * h;
    var alphaSum = 0, lumaSum = 0, luma = new Float32Array(n);
    for (var p = 0, q = 0; p < n; p++, q += 4) {
      luma[p] = 0.299 * rgba[q] + 0.587 * rgba[q + 1] + 0.114 * rgba[q + 2];
      alphaSum += rgba[q + 3];
      lumaSum += luma[p];
    }
    var transparent = alphaSum / n < 250, invert = !transparent && lumaSum / n > 127;
    for (p = 0, q = 0; p < n; p++, q += 4) {
      var value = transparent ? rgba[q + 3] : invert ? 255 - luma[p] : luma[p];
      rgba[q] = rgba[q + 1] = rgba[q + 2] = value;
      rgba[q + 3] = 255;
    }
    ctx.putImageData(data, 0, 0);
    blank(slot);
    slot.ctx.imageSmoothingQuality = "high";
    slot.ctx.drawImage(work, Math.round((PAD - w) / 2), Math.round((PAD - h) / 2));
    markUsed(slot);
    updatePreview(slot);
  }

  // Loads image files into slots: from `start` on (a slot index), else into empty slots.
  function loadFiles(fileList, start) {
    var files = Array.prototype.filter.call(fileList, function (f) {
      return !f.type || f.type.indexOf("image/") === 0;
    });
    var skipped = fileList.length - files.length;
    var order = [];
    if (start !== null && start !== undefined) {
      for (var i = start; i < SLOTS; i++) order.push(state.slots[i]);
    } else {
      order = state.slots.filter(function (s) { return !s.used; });
    }
    var problems = [];
    if (skipped) problems.push(skipped + " file(s) are not images");
    if (files.length > order.length) {
      problems.push("only " + order.length + " free example slot(s): " +
                    (files.length - order.length) + " file(s) left out (clear some first)");
      files = files.slice(0, order.length);
    }
    return Promise.all(files.map(function (file, k) {
      return createImageBitmap(file).then(function (bitmap) {
        putImage(order[k], bitmap);
        if (bitmap.close) bitmap.close();
      }, function () {
        problems.push(file.name + " could not be read as an image");
      });
    })).then(function () {
      if (problems.length) showError(problems.join("\n"));
      else clearError();
    });
  }

  function watchDrops() {
    var depth = 0;
    function hasFiles(event) {
      return event.dataTransfer && Array.prototype.indexOf.call(
        event.dataTransfer.types || [], "Files") >= 0;
    }
    document.addEventListener("dragenter", function (event) {
      if (!hasFiles(event)) return;
      depth += 1;
      ui.dropHint.hidden = false;
    });
    document.addEventListener("dragleave", function () {
      depth = Math.max(0, depth - 1);
      if (!depth) ui.dropHint.hidden = true;
    });
    document.addEventListener("dragover", function (event) {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    });
    document.addEventListener("drop", function (event) {
      depth = 0;
      ui.dropHint.hidden = true;
      if (!event.dataTransfer || !event.dataTransfer.files.length) return;
      event.preventDefault();
      var target = event.target.closest ? event.target.closest(".slot") : null;
      loadFiles(event.dataTransfer.files, target ? Number(target.dataset.index) : null);
    });
  }

  // -- generating ----------------------------------------------------------------------
  function integerField(input, label, min) {
    var text = input.value.trim(), value = Number(text);
    if (!text || !Number.isSafeInteger(value) || (min !== undefined && value < min)) {
      throw new Error(label + " must be a whole number" +
                      (min !== undefined ? " >= " + min : "") + ", got " +
                      JSON.stringify(input.value));
    }
    return value;
  }

  function generate() {
    if (state.busy) return Promise.resolve();
    var name = ui.model.value.trim();
    var ready = name && state.model === name && state.shape
      ? Promise.resolve(true) : loadModel(name);
    return ready.then(function (ok) {
      if (!name) {
        showError("give a model name (the models this server serves are listed in the field)");
        setState("error");
        return;
      }
      if (!ok) return;  // loadModel showed why
      var inputs;
      try {
        var used = state.slots.filter(function (s) { return s.used; });
        if (!used.length) {
          throw new Error("draw at least one example (or drop an image file onto the page)");
        }
        inputs = {
          support_images: used.map(function (s) {
            return nested(downsample(s.pad, state.shape), state.shape);
          }),
          num_samples: integerField(ui.numSamples, "Samples", 1),
          seed: integerField(ui.seed, "Seed"),
          steps: integerField(ui.steps, "Adaptation steps", 0),
        };
      } catch (e) {
        showError(e.message);
        setState("error");
        return;
      }
      var body = {signature_name: SIGNATURE, inputs: inputs};
      state.lastRequest = body;
      state.busy = true;
      ui.generate.disabled = true;
      setState("busy");
      setStatus("generating " + inputs.num_samples + " samples from " +
                inputs.support_images.length + " example(s)\u2026");
      var started = performance.now();
      return request("POST", modelPath(name) + ":predict", body).then(function (result) {
        if (!result.ok) {
          showError(httpError("generating", result));
          setStatus("");
          setState("error");
          return;
        }
        var outputs = result.body && result.body.outputs;
        var images = outputs && !Array.isArray(outputs) ? outputs.images : outputs;
        if (!Array.isArray(images)) {
          showError("generating: the server's answer holds no images: " +
                    result.text.slice(0, 300));
          setState("error");
          return;
        }
        clearError();
        ui.samples.replaceChildren();
        images.forEach(function (image, i) {
          var canvas = document.createElement("canvas");
          canvas.className = "sample";
          canvas.setAttribute("aria-label", "sample " + (i + 1));
          paint(canvas, image, state.shape);
          ui.samples.appendChild(canvas);
        });
        state.generation += 1;
        document.body.dataset.generation = String(state.generation);
        setStatus(images.length + " samples \u00b7 " + inputs.support_images.length +
                  " example(s) \u00b7 seed " + inputs.seed + " \u00b7 " + inputs.steps +
                  " step(s) \u00b7 " + Math.round(performance.now() - started) + " ms");
        setState("done");
      }, function (error) {
        showError(unreachable("generating", error));
        setStatus("");
        setState("error");
      });
    }).finally(function () {
      state.busy = false;
      ui.generate.disabled = false;
    });
  }

  // -- start ---------------------------------------------------------------------------
  function start() {
    for (var i = 0; i < SLOTS; i++) state.slots.push(makeSlot(i));
    ui.clearAll.addEventListener("click", function () {
      state.slots.forEach(blank);
      clearError();
    });
    ui.files.addEventListener("change", function () {
      loadFiles(ui.files.files, null).then(function () { ui.files.value = ""; });
    });
    ui.newSeed.addEventListener("click", function () {
      ui.seed.value = String(Math.floor(Math.random() * 2147483647));
    });
    ui.generate.addEventListener("click", generate);
    [ui.numSamples, ui.seed, ui.steps].forEach(function (input) {
      input.addEventListener("keydown", function (event) {
        if (event.key === "Enter") generate();
      });
    });
    ui.model.addEventListener("change", function () { loadModel(ui.model.value); });
    watchDrops();

    var wanted = new URLSearchParams(window.location.search).get("model");
    loadModelNames().then(function (names) {
      if (wanted) ui.model.value = wanted;
      else if (!ui.model.value && names.length) ui.model.value = names[0];
      return loadModel(ui.model.value);
    });
  }

  // For tests and the curious (browser console): the page's state and pixel helpers.
  window.tfmetaDrawPage = {state: state, downsample: downsample, loadFiles: loadFiles,
                           generate: generate};
  start();
})();
