"""TF Serving's REST API for `export.serve.ModelServer` (standard library `http.server`).

Endpoints and JSON as TF Serving's RESTful API (https://www.tensorflow.org/tfx/serving/api_rest;
docs/REST.md has `curl` examples):

* `GET /v1/models/{name}[/versions/{v}|/labels/{l}]`: model status, the JSON form of
  GetModelStatusResponse (`{"model_version_status": [{"version": "1", "state":
  "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}`).
* `GET /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata`: `{"model_spec": ...,
  "metadata": {"signature_def": <SignatureDefMap as JSON>}}`, from the same response as
  gRPC GetModelMetadata.
* `POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict` with `signature_name`
  (optional) and either `inputs` (columnar: an object name -> value, or a bare value when
  the signature has one input; a JSON scalar is a scalar tensor) -> `{"outputs": ...}`,
  or `instances` (row format: a list of objects, or of values for one input; every input
  gets a leading batch dimension) -> `{"predictions": ...}` (one object per row when
  there are several outputs). DT_STRING values are JSON strings (UTF-8) or
  `{"b64": "<base64>"}`; integers and floats are JSON numbers (`NaN`, `Infinity`
  accepted and written, as TF Serving does).
* `:classify` / `:regress`: 501 (UNIMPLEMENTED, as the gRPC methods of this server).
* With the server's `drawing_page` (`--drawing_page`): `GET /draw/` and its assets, the
  files of `export/static/` (`DrawingPage`, docs/DRAWING_PAGE.md), `GET /draw/models.json`
  (served model names and request limits, for the page), and `/`, `/draw` redirecting to
  `/draw/`. Not part of TF Serving's API.

Every request goes through the server's own calls (`ModelServer.predict`,
`.model_metadata`, `.model_status`): the JSON is turned into the PredictRequest a gRPC
client would send, so models, versions, validation and limits are the gRPC port's.
Errors are `{"error": "<message>"}` with the HTTP code TF Serving maps the status code to
(`HTTP_STATUS`); paths outside `/v1/` are 404, unparsable `/v1/` paths 400 ("Malformed
request", as TF Serving). A body over the server's message limit is 413 (before it is
read: the gRPC transport's own limit answers RESOURCE_EXHAUSTED there).

Deliberate differences from TF Serving:
* DT_STRING outputs are written as `{"b64": ...}` when the output name ends in `_bytes`
  (TF Serving's rule) *or* any value is not valid UTF-8 (e.g. `sample_png`'s `png`):
  TF Serving would write those bytes raw, which is not valid JSON.
* Integer inputs outside their dtype's range (e.g. 300 for uint8) are refused rather
  than wrapped.
* The row format cannot feed scalar inputs (it adds a batch dimension); for a signature
  with scalar inputs, such as all of ours, `instances` is refused with a message that
  says to use `inputs`.
"""

import base64
import binascii
import http.server
import json
import logging
import math
import os
import re
import socket
import socketserver
import sys
import threading
import urllib.parse

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2, predict_pb2

from export.serve import RequestError
from tfmeta.errors import ConfigError

__all__ = ["HTTP_STATUS", "DrawingPage", "RestApi", "RestServer", "http_status"]

_log = logging.getLogger("export.rest")

# gRPC status code -> HTTP status: the one table (TF Serving's, http_server.cc).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# TF Serving's paths (http_rest_api_util.cc), case-insensitive like theirs.
_PREDICT_PATH = re.compile(r"/v1/models/([^/:]+)(?:/versions/([0-9]+)|/labels/([^/:]+))?"
                           r":(classify|regress|predict)", re.IGNORECASE)
_STATUS_PATH = re.compile(r"/v1/models(?:/([^/:]+))?(?:/versions/([0-9]+)|/labels/([^/:]+))?"
                          r"(?:/(metadata))?", re.IGNORECASE)
_MAX_RANK = 32
_INVALID = grpc.StatusCode.INVALID_ARGUMENT


def http_status(code):
    """gRPC StatusCode -> HTTP status code (500 for anything unlisted)."""
    return HTTP_STATUS.get(code, 500)


def _invalid(message):
    return RequestError(_INVALID, message)


def _short(value, limit=60):
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _message_json(message):
    # What TF Serving prints: proto field names, fields at their default values included.
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


# -- JSON -> tensors ---------------------------------------------------------------------
def _is_b64(value):
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _converter(name, dtype):
    """-> function(list of JSON leaves) -> list of Python values of `dtype`, raising
    INVALID_ARGUMENT on the first leaf that is not one."""
    def type_error(value):
        if isinstance(value, list):
            return _invalid(f"input {name!r}: the nested lists are not rectangular")
        return _invalid(f"input {name!r}: JSON value {_short(value)} is not of type "
                        f"{dtype.name}")

    if dtype == tf.string:
        def one(value):
            if isinstance(value, str):
                try:
                    return value.encode("utf-8")
                except UnicodeEncodeError:  # JSON allows lone surrogates ("\ud800")
                    raise _invalid(f"input {name!r}: {_short(value)} is not valid UTF-8 "
                                   "text; send bytes as {\"b64\": ...}") from None
            if _is_b64(value):
                try:
                    return base64.b64decode(value["b64"], validate=True)
                except (binascii.Error, ValueError):
                    raise _invalid(f"input {name!r}: {_short(value)} is not valid "
                                   "base64") from None
            raise type_error(value)
    elif dtype == tf.bool:
        def one(value):
            if type(value) is not bool:
                raise type_error(value)
            return value
    elif dtype.is_integer:
        low, high = int(dtype.min), int(dtype.max)

        def one(value):
            if type(value) is not int:  # bool is not an int here, nor is 3.0
                raise type_error(value)
            if not low <= value <= high:
                raise _invalid(f"input {name!r}: {value} is outside the range of "
                               f"{dtype.name} [{low}, {high}]")
            return value

        def convert(leaves):  # the common case (pixels) without a call per value
            if all(type(v) is int for v in leaves) and (
                    not leaves or low <= min(leaves) and max(leaves) <= high):
                return leaves
            return [one(v) for v in leaves]

        return convert
    elif dtype.is_floating:
        info = np.finfo(dtype.as_numpy_dtype)
        exact_int = 2 ** (info.nmant + 1) - 1

        def one(value):
            if type(value) not in (int, float):
                raise type_error(value)
            if (abs(value) > exact_int if type(value) is int
                    else math.isfinite(value) and abs(value) > float(info.max)):
                raise _invalid(f"input {name!r}: {_short(value)} cannot be converted to "
                               f"{dtype.name} without loss of precision")
            return value
    else:
        raise RequestError(grpc.StatusCode.UNIMPLEMENTED,
                           f"input {name!r}: JSON values of type {dtype.name} are not "
                           "supported")
    return lambda leaves: [one(v) for v in leaves]


def _flatten(name, value, convert):
    """Nested JSON lists -> (shape from the first elements, flat converted leaves)."""
    shape, first = [], value
    while isinstance(first, list):
        shape.append(len(first))
        if not first:
            break
        first = first[0]
    if len(shape) > _MAX_RANK:
        raise _invalid(f"input {name!r}: lists nested {len(shape)} deep (at most "
                       f"{_MAX_RANK})")
    items = [value]
    for size in shape:  # one level at a time: every list there must have `size` items
        nested = []
        for item in items:
            if type(item) is not list or len(item) != size:
                raise _invalid(f"input {name!r}: the nested lists are not rectangular "
                               f"(shape {shape} from the first elements)")
            nested.extend(item)
        items = nested
    return shape, convert(items)


def _tensor_proto(flat, shape, dtype):
    array = np.array(flat, dtype=object if dtype == tf.string else dtype.as_numpy_dtype)
    return tf.make_tensor_proto(array.reshape(shape), dtype=dtype)


def _columnar(value, infos, signature_name):
    """`inputs` -> {name: TensorProto, or None for a name the signature lacks}."""
    if not isinstance(value, dict) or _is_b64(value):
        if len(infos) != 1:
            raise _invalid(f"'inputs' is a plain value or list, but signature "
                           f"{signature_name!r} has inputs {sorted(infos)}: give an object "
                           "{name: value}")
        value = {next(iter(infos)): value}
    tensors = {}
    for name, item in value.items():
        if name not in infos:
            tensors[name] = None
            continue
        dtype = tf.dtypes.as_dtype(infos[name].dtype)
        shape, flat = _flatten(name, item, _converter(name, dtype))
        tensors[name] = _tensor_proto(flat, shape, dtype)
    return tensors


def _rows(instances, infos, signature_name):
    """`instances` -> {name: TensorProto with a leading batch dimension, or None}."""
    if not isinstance(instances, list) or not instances:
        raise _invalid("'instances' must be a non-empty list (one entry per row)")
    scalars = sorted(name for name, info in infos.items()
                     if not info.tensor_shape.unknown_rank and not info.tensor_shape.dim)
    if scalars:
        raise _invalid(f"signature {signature_name!r} has scalar inputs {scalars}, which the "
                       "row format ('instances') cannot feed (it gives every input a batch "
                       "dimension): send {\"inputs\": {name: value}} (columnar format) "
                       "instead")
    named = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not named and len(infos) != 1:
        raise _invalid(f"'instances' is a list of values, but signature {signature_name!r} "
                       f"has inputs {sorted(infos)}: give a list of objects {{name: value}}")
    keys = set(instances[0]) if named else {next(iter(infos))}
    flats, shapes = {name: [] for name in keys}, {}
    for i, item in enumerate(instances):
        if named != (isinstance(item, dict) and not _is_b64(item)):
            raise _invalid(f"instance {i} is {'not ' if named else ''}an object, unlike "
                           "instance 0")
        row = item if named else {next(iter(keys)): item}
        if set(row) != keys:
            raise _invalid(f"instance {i} has inputs {sorted(row)}, instance 0 has "
                           f"{sorted(keys)}: every instance names the same inputs")
        for name, value in row.items():
            if name not in infos:
                continue
            dtype = tf.dtypes.as_dtype(infos[name].dtype)
            shape, flat = _flatten(name, value, _converter(name, dtype))
            if shapes.setdefault(name, shape) != shape:
                raise _invalid(f"input {name!r}: instance {i} has shape {shape}, instance "
                               f"0 has {shapes[name]}; every instance's value must have "
                               "the same shape")
            flats[name].extend(flat)
    return {name: (_tensor_proto(flats[name], [len(instances)] + shapes[name],
                                 tf.dtypes.as_dtype(infos[name].dtype))
                   if name in infos else None) for name in keys}


def fill_inputs(doc, signature, signature_name, request):
    """Fills `request.inputs` from a predict body; returns True for the row format.

    A name the signature does not have gets an empty TensorProto, so that the server's
    validation (the gRPC port's) reports it as an unexpected input, as it does missing ones.
    """
    has_rows, has_columns = "instances" in doc, "inputs" in doc
    if has_rows and has_columns:
        raise _invalid("give one of 'instances' (row format) or 'inputs' (columnar format), "
                       "not both")
    if not has_rows and not has_columns:
        raise _invalid("Missing 'inputs' or 'instances' key")
    infos = signature.inputs
    if not infos:
        raise _invalid(f"signature {signature_name!r} has no inputs")
    tensors = (_rows(doc["instances"], infos, signature_name) if has_rows
               else _columnar(doc["inputs"], infos, signature_name))
    for name, proto in tensors.items():
        entry = request.inputs.get_or_create(name)
        if proto is not None:
            entry.CopyFrom(proto)
    return has_rows


# -- tensors -> JSON ---------------------------------------------------------------------
# The JSON text is written directly: building nested Python lists for [N, 28, 28, 1]
# images (one list per pixel) costs ~15 ms per response here, mostly cyclic garbage
# collection walking TensorFlow's large heap; the text costs ~1.5 ms.
_BYTE_TEXTS = np.array([str(v) for v in range(-128, 256)], dtype=object)  # int8, uint8


def _float_text(text):
    return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}.get(text, text)


def _leaf_texts(name, array):
    """ndarray -> the JSON texts of its values, row-major (module doc: conventions)."""
    kind, flat = array.dtype.kind, array.ravel()
    if kind == "b":
        return ["true" if v else "false" for v in flat.tolist()]
    if array.dtype in (np.uint8, np.int8):  # pixels: a table lookup, not str() per value
        return _BYTE_TEXTS[flat.astype(np.int16) + 128].tolist()
    if kind in "iu":
        return list(map(str, flat.tolist()))
    if kind == "f":
        # str of a numpy float32 is the shortest decimal that reads back as the same
        # float32 (0.2, not 0.20000000298...), as TF Serving writes floats.
        values = map(repr, flat.tolist()) if array.dtype == np.float64 else map(str, flat)
        return [_float_text(v) for v in values]
    if kind in "OSa":
        values = flat.tolist()
        if not name.endswith("_bytes"):
            try:
                return [json.dumps(v.decode("utf-8")) for v in values]
            except UnicodeDecodeError:
                pass
        return ['{"b64":"' + base64.b64encode(v).decode("ascii") + '"}' for v in values]
    raise _invalid(f"output {name!r} of dtype {array.dtype} has no JSON form")


def _array_text(leaves, shape):
    """JSON texts of the values of an array of `shape` -> the JSON text of the array."""
    if not shape:
        return leaves[0]
    if not leaves:
        return json.dumps(np.empty(shape).tolist())
    # Between values i-1 and i, k lists close and k open again: k = how many trailing
    # dimensions (the outermost excepted) end a block at i.
    index, closed, block = np.arange(1, len(leaves)), np.zeros(len(leaves) - 1, int), 1
    for size in reversed(shape[1:]):
        block *= size
        closed += index % block == 0
    table = np.array(["]" * k + "," + "[" * k for k in range(len(shape))], dtype=object)
    parts = [None] * (2 * len(leaves) - 1)
    parts[::2], parts[1::2] = leaves, table[closed].tolist()
    return "[" * len(shape) + "".join(parts) + "]" * len(shape)


def outputs_json(outputs, row_format):
    """{name: ndarray} -> the JSON text of `{"predictions": ...}` (row format) or
    `{"outputs": ...}` (columnar)."""
    outputs = {name: np.asarray(array) for name, array in outputs.items()}
    leaves = {name: _leaf_texts(name, array) for name, array in outputs.items()}
    if not row_format:
        if len(outputs) == 1:
            (name, array), = outputs.items()
            return '{"outputs":' + _array_text(leaves[name], list(array.shape)) + "}"
        return '{"outputs":{' + ",".join(
            json.dumps(name) + ":" + _array_text(leaves[name], list(array.shape))
            for name, array in outputs.items()) + "}}"
    batch = None
    for name, array in outputs.items():
        size = array.shape[0] if array.ndim else 0
        if size < 1 or batch not in (None, size):
            raise _invalid(f"output {name!r} has shape {list(array.shape)}, which the row "
                           "format cannot write (every output needs the same batch size >= 1"
                           f"{'' if batch is None else f', here {batch}'}); use 'inputs' "
                           "(columnar format)")
        batch = size
    if len(outputs) == 1:
        (name, array), = outputs.items()
        return '{"predictions":' + _array_text(leaves[name], list(array.shape)) + "}"
    rows = []
    for i in range(batch):
        fields = []
        for name, array in outputs.items():
            step = len(leaves[name]) // batch
            fields.append(json.dumps(name) + ":" + _array_text(
                leaves[name][i * step:(i + 1) * step], list(array.shape[1:])))
        rows.append("{" + ",".join(fields) + "}")
    return '{"predictions":[' + ",".join(rows) + "]}"


# -- requests ----------------------------------------------------------------------------
class RestApi:
    """The REST API of a ModelServer without sockets: `handle(method, path, body)`."""

    def __init__(self, server):
        self.server = server
        self.page = DrawingPage(server) if getattr(server, "drawing_page", False) else None
        self.max_body_bytes = server.max_message_bytes
        self.stopping = False
        self._slots = threading.BoundedSemaphore(server.num_threads)
        self._active = 0
        self._idle = threading.Condition()

    def handle(self, method, path, body):
        """-> (HTTP status, JSON response text) for one request; never raises."""
        with self._idle:
            self._active += 1
        try:
            with self._slots:
                response = self._route(method, path, body)
            status = 200
        except RequestError as e:
            status, response = http_status(e.code), {"error": str(e)}
        except Exception as e:  # a bug, not a bad request: log it, answer 500
            _log.error("internal error while serving %s %s", method, path, exc_info=e)
            status, response = 500, {"error": f"internal error: {e}"}
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()
        if not isinstance(response, str):
            response = json.dumps(response, separators=(",", ":"))
        return status, response

    def wait_idle(self, timeout):
        """Waits (at most `timeout` s) until no request is being handled."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def _route(self, method, path, body):
        path = urllib.parse.urlsplit(path).path
        if not path.lower().startswith("/v1/"):
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"no such endpoint: {method} {path} (the REST API is under "
                               "/v1/models/; see docs/REST.md)")
        match = (_PREDICT_PATH.fullmatch(path) if method == "POST"
                 else _STATUS_PATH.fullmatch(path) if method == "GET" else None)
        if match is None:
            raise _invalid(f"Malformed request: {method} {path}")
        name, version, label, action = match.groups()
        if name is None:
            raise _invalid("Missing model name in request.")
        spec = model_pb2.ModelSpec()
        spec.name = urllib.parse.unquote(name)
        if version is not None:
            if len(version.lstrip("0")) > 19 or int(version) >= 2 ** 63:
                raise _invalid(f"Failed to convert version: {version} to numeric.")
            spec.version.value = int(version)
        if label is not None:
            spec.version_label = urllib.parse.unquote(label)
        action = (action or "").lower()
        if method == "GET":
            return self._metadata(spec) if action == "metadata" else _message_json(
                self.server.model_status(spec))
        if action != "predict":
            raise RequestError(grpc.StatusCode.UNIMPLEMENTED,
                               f"{action} is not implemented by this server (its models "
                               "have Predict signatures only): use :predict")
        return self._predict(spec, body)

    def _metadata(self, spec):
        response = self.server.model_metadata(spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {"model_spec": _message_json(response.model_spec),
                "metadata": {"signature_def": _message_json(signature_map)}}

    def _predict(self, spec, body):
        if not body:
            raise _invalid("JSON Parse error: The document is empty")
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as e:
            raise _invalid(f"JSON Parse error: {e}") from None
        if not isinstance(doc, dict):
            raise _invalid(f"the request body must be a JSON object, got {_short(doc)}")
        signature_name = doc.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise _invalid("'signature_name' key must be a string value.")
        request = predict_pb2.PredictRequest()
        request.model_spec.CopyFrom(spec)
        request.model_spec.signature_name = signature_name
        row_format = []

        def fill(signature):
            row_format.append(fill_inputs(doc, signature, signature_name or "serving_default",
                                          request))

        _, _, _, outputs = self.server.predict(request, fill)
        return outputs_json(outputs, row_format[0])


# -- the drawing page (static files) ------------------------------------------------------
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


class DrawingPage:
    """The drawing page's files (`export/static/`), read once, served under `/draw/`.

    `route(path)` -> None for a path that is not the page's (the REST API's then), else
    (HTTP status, {header: value}, body bytes). Only files present in the folder at start
    and with a known type are served (nothing is looked up from the request path). Every
    page response forbids loading anything from another origin (Content-Security-Policy),
    so a page that works here works offline.
    """

    PREFIX = "/draw/"
    INDEX = "draw.html"
    TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
             ".css": "text/css; charset=utf-8", ".png": "image/png",
             ".svg": "image/svg+xml", ".ico": "image/x-icon"}
    HEADERS = {
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                                   "img-src 'self' data: blob:; connect-src 'self'; "
                                   "base-uri 'none'; form-action 'none'; "
                                   "frame-ancestors 'none'",
    }

    def __init__(self, server, folder=STATIC_DIR):
        self.server = server
        self.files = {}
        try:
            names = sorted(os.listdir(folder))
        except OSError as e:
            raise ConfigError(f"the drawing page's files are missing ({e}); reinstall tfmeta") \
                from e
        for name in names:
            kind = self.TYPES.get(os.path.splitext(name)[1].lower())
            path = os.path.join(folder, name)
            if kind and os.path.isfile(path):
                with open(path, "rb") as f:
                    self.files[name] = (f.read(), kind)
        if self.INDEX not in self.files:
            raise ConfigError(f"the drawing page's {self.INDEX} is missing from {folder}; "
                              "reinstall tfmeta")

    def models(self):
        """The JSON the page reads first: served model names and the request limits."""
        server = self.server
        return {"models": sorted(server.models), "max_num_samples": server.max_num_samples,
                "max_steps": server.max_steps, "max_support": server.max_support}

    def route(self, path):
        parts = urllib.parse.urlsplit(path)
        path = parts.path
        if path in ("/", "/draw"):  # the page's relative links need the trailing slash
            query = "?" + parts.query if parts.query else ""
            return 302, {"Location": self.PREFIX + query}, b""
        if not path.startswith(self.PREFIX):
            return None
        name = path[len(self.PREFIX):] or self.INDEX
        if name == "models.json":
            body, kind = json.dumps(self.models()).encode(), "application/json"
        elif name in self.files:
            body, kind = self.files[name]
        else:
            body = json.dumps({"error": f"no such file of the drawing page: {path}"}).encode()
            return 404, {"Content-Type": "application/json"}, body
        return 200, dict(self.HEADERS, **{"Content-Type": kind}), body


# -- HTTP --------------------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response has a Content-Length
    server_version = "tfmeta-serve"
    timeout = 300  # seconds an idle keep-alive connection is kept open
    disable_nagle_algorithm = True  # no 40 ms Nagle/delayed-ACK stalls on keep-alive

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PUT(self):
        self._serve("PUT")

    def do_DELETE(self):
        self._serve("DELETE")

    def _serve(self, method):
        api = self.server.api
        status, payload = self._read_body(api.max_body_bytes)
        page = (api.page.route(self.path) if status is None and method == "GET"
                and api.page is not None else None)
        if page is not None:
            status, headers, data = page
        elif status is None:
            status, text = api.handle(method, self.path, payload)
        else:
            self.close_connection = True  # the unread body is still on the socket
            text = json.dumps(payload)
        if page is None:
            headers, data = {"Content-Type": "application/json"}, text.encode("utf-8")
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        if api.stopping:
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self, limit):
        """-> (None, body bytes), or (HTTP status, error response) for a body not read."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return 411, {"error": "chunked request bodies are not supported: send a "
                                  "Content-Length"}
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit():
            return 400, {"error": f"bad Content-Length: {length!r}"}
        if int(length) > limit:
            return 413, {"error": f"request body of {int(length)} bytes exceeds the "
                                  f"server's limit of {limit} bytes (--max_message_mb)"}
        return None, self.rfile.read(int(length))

    def log_message(self, format, *args):  # noqa: A002 (the base class's signature)
        _log.debug("%s " + format, self.address_string(), *args)


class _HttpServer(http.server.ThreadingHTTPServer):
    """A thread per connection; tracks open connections so `stop` can close idle ones."""

    daemon_threads = True
    request_queue_size = 512  # listen backlog (socketserver's 5 resets bursts of clients)

    def __init__(self, address, api):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.api = api
        self._connections = set()
        self._lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self):
        # HTTPServer.server_bind would resolve the host name (a DNS lookup): not needed.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address):
        with self._lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self):
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            _log.debug("connection from %s: %s", client_address, error)
        else:
            _log.error("error on a REST connection from %s", client_address, exc_info=error)


class RestServer:
    """Serves `RestApi(model_server)` on host:port (port 0: a free one, see `.port`)."""

    def __init__(self, model_server, host, port):
        self.api = RestApi(model_server)
        try:
            self._httpd = _HttpServer((host, port), self.api)
        except OSError as e:
            raise ConfigError(f"cannot bind the REST API to {host}:{port} ({e}); is the port "
                              "in use?") from e
        self.port = self._httpd.server_address[1]
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="rest-api",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()

    def stop(self, grace=5.0):
        """Stops accepting, lets in-flight requests finish (at most `grace` s), closes."""
        self.api.stopping = True
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self.api.wait_idle(grace)
        self._httpd.close_connections()
        self._httpd.server_close()
