"""A small TF Serving-compatible gRPC model server for exported generative modules.

The official `tensorflow_model_server` binary is not installable on our machines
(TF_NOTES.md), so this implements the parts of its gRPC API our clients use, with its
semantics, on top of `tf.saved_model.load`:

* `tensorflow.serving.PredictionService/Predict` and `/GetModelMetadata`
  (`signature_def` field); Classify, Regress, MultiInference: UNIMPLEMENTED.
* `tensorflow.serving.ModelService/GetModelStatus`; HandleReloadConfigRequest:
  UNIMPLEMENTED.
* With `--rest_api_port`, TF Serving's REST API on a second port (export/rest.py,
  docs/REST.md): model status, metadata and `:predict`, served by the same ModelServer
  through the same calls (`ModelServer.predict`, `.model_metadata`, `.model_status`), so
  both APIs see the same models, versions, validation and limits.
* With `--drawing_page` (needs `--rest_api_port`), a static page on the REST port at
  `/draw/` (`/` redirects there): draw a few examples of a symbol, get samples adapted to
  them through the REST API (export/static/, docs/DRAWING_PAGE.md).
* Model repository: `<base_path>/<version>/` directories (digits only), watched by a
  background thread every `poll_seconds`; the version policy from the model config
  (default: latest 1). A new version is loaded (and warmed up from
  `assets.extra/tf_serving_warmup_requests`) *before* it is switched in; the old one is
  unloaded after. A version that fails to load is reported as END with its error and the
  previous version keeps serving. With `--model_config_file`, the file is re-read on each
  poll, so models added by `export.export_saved_model` appear without a restart.
* Status codes as TF Serving: unknown model or version -> NOT_FOUND; unknown signature
  -> FAILED_PRECONDITION (what TF Serving returns); missing, extra, wrongly typed or
  wrongly shaped inputs, and `num_samples` outside `1..max_num_samples` (likewise
  `steps`, support size), -> INVALID_ARGUMENT.

CLI:
    python -m export.serve --model_base_path <base>/<name> [--model_name <name>] \
        [--port 8500] [--rest_api_port 8501 [--drawing_page]] [--host 127.0.0.1]
    python -m export.serve --model_config_file <base>/models.config
Prints `REST API listening on <host>:<port>` (with `--rest_api_port`), `drawing page at
http://<host>:<port>/draw/` (with `--drawing_page`), then
`listening on <host>:<port>` (gRPC) once serving (`--port 0` / `--rest_api_port -1` pick
a free port). SIGTERM or SIGINT stops it gracefully (in-flight requests get
`--grace_seconds`).
"""

import concurrent.futures
import logging
import os
import signal
import sys
import threading

import grpc

from tfmeta.runtime import quiet_tensorflow

quiet_tensorflow()  # before TF is imported (sets env defaults only)
import tensorflow as tf  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_log_pb2, prediction_service_pb2_grpc)
from tensorflow_serving.config import model_server_config_pb2

from export.export_saved_model import WARMUP_FILE, list_versions
from tfmeta.errors import ConfigError

__all__ = ["ModelServer", "ServedModel", "RequestError", "load_model_config"]

_log = logging.getLogger("export.serve")
_State = get_model_status_pb2.ModelVersionStatus.State
# Inputs whose values (not only dtype/shape) are limited: name -> (min, server attribute).
_SCALAR_LIMITS = {"num_samples": (1, "max_num_samples"), "steps": (0, "max_steps")}


class RequestError(Exception):
    """A request the server rejects; carries the gRPC status code."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def load_model_config(path):
    """Parses a ModelServerConfig text file -> list of ModelConfig (raises ConfigError)."""
    try:
        with open(path) as f:
            config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    except (OSError, text_format.ParseError) as e:
        raise ConfigError(f"--model_config_file={path!r}: cannot read a ModelServerConfig "
                          f"text proto ({e})") from e
    entries = list(config.model_config_list.config)
    for entry in entries:
        if not entry.name or not entry.base_path:
            raise ConfigError(f"--model_config_file={path!r}: every config needs a name "
                              "and a base_path")
    return entries


class _Version:
    """One loaded SavedModel version: callables and SignatureDefs (for validation)."""

    def __init__(self, path):
        self.path = path
        self.loaded = tf.saved_model.load(path, tags=["serve"])
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            saved_model = saved_model_pb2.SavedModel.FromString(f.read())
        meta_graph = next((m for m in saved_model.meta_graphs
                           if "serve" in m.meta_info_def.tags), None)
        if meta_graph is None:
            raise ValueError(f"{path} has no MetaGraph tagged 'serve'")
        self.signature_defs = {name: sig for name, sig in meta_graph.signature_def.items()
                               if not name.startswith("__")}
        self.functions = {name: self.loaded.signatures[name] for name in self.signature_defs}

    def signature(self, name):
        """-> the SignatureDef `name` ("" = serving_default), or FAILED_PRECONDITION."""
        name = name or "serving_default"
        signature = self.signature_defs.get(name)
        if signature is None:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"Serving signature key \"{name}\" not found.")
        return signature

    def warm_up(self, server_model):
        """Replays `assets.extra/tf_serving_warmup_requests`; returns the count."""
        path = os.path.join(self.path, WARMUP_FILE)
        if not os.path.exists(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path).take(1000):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if log.HasField("predict_log"):
                server_model.predict_with(self, log.predict_log.request)
                count += 1
        return count


class ServedModel:
    """A model name, its base path, version policy and currently loaded versions."""

    def __init__(self, server, name, base_path, policy=None):
        self.server = server
        self.name = name
        self.base_path = os.path.abspath(base_path)
        self.policy = policy or model_server_config_pb2.ModelConfig().model_version_policy
        self.versions = {}   # version -> _Version (AVAILABLE)
        self.statuses = {}   # version -> (state, error message or "")
        self._lock = threading.Lock()

    # -- version management -------------------------------------------------------------
    def _wanted(self, on_disk):
        which = self.policy.WhichOneof("policy_choice")
        if which == "all":
            return set(on_disk)
        if which == "specific":
            return set(on_disk) & set(self.policy.specific.versions)
        num = self.policy.latest.num_versions if which == "latest" else 1
        return set(on_disk[-max(num, 1):])

    def refresh(self):
        """Loads wanted versions not yet loaded, then unloads unwanted ones."""
        on_disk = list_versions(self.base_path, require_saved_model=True)
        if not on_disk:
            return  # keep whatever serves (TF Serving would unload; we prefer to serve)
        wanted = self._wanted(on_disk)
        for version in sorted(wanted - set(self.versions)):
            if self.statuses.get(version, (None,))[0] == _State.END:
                continue  # failed before: do not retry every poll
            self.statuses[version] = (_State.LOADING, "")
            try:
                loaded = _Version(os.path.join(self.base_path, str(version)))
                loaded.warmup_count = loaded.warm_up(self)
            except Exception as e:  # a broken export must not take the server down
                _log.error("model %s version %d failed to load: %s", self.name, version, e)
                self.statuses[version] = (_State.END, f"failed to load: {e}")
                continue
            with self._lock:
                self.versions[version] = loaded
                self.statuses[version] = (_State.AVAILABLE, "")
            _log.info("model %s: version %d available (%d warm-up requests)",
                      self.name, version, loaded.warmup_count)
        if not set(self.versions) & wanted:
            return  # nothing wanted could load: keep serving what we have
        for version in sorted(set(self.versions) - wanted):
            with self._lock:
                self.statuses[version] = (_State.UNLOADING, "")
                del self.versions[version]
            self.statuses[version] = (_State.END, "")
            _log.info("model %s: version %d unloaded", self.name, version)

    def resolve(self, model_spec):
        """-> (version number, _Version) for a request's ModelSpec, or NOT_FOUND."""
        with self._lock:
            if model_spec.HasField("version"):
                version = model_spec.version.value
                if version not in self.versions:
                    raise RequestError(grpc.StatusCode.NOT_FOUND,
                                       f"Servable not found for request: "
                                       f"Specific({self.name}, {version})")
                return version, self.versions[version]
            if model_spec.version_label:
                raise RequestError(grpc.StatusCode.NOT_FOUND,
                                   f"Unrecognized servable version label: "
                                   f"{model_spec.version_label}")
            if not self.versions:
                raise RequestError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: Latest({self.name})")
            version = max(self.versions)
            return version, self.versions[version]

    # -- inference ------------------------------------------------------------------------
    def predict_with(self, loaded, request):
        """Validates `request` against the SignatureDef and runs it -> {name: ndarray}."""
        signature_name = request.model_spec.signature_name or "serving_default"
        signature = loaded.signature(signature_name)
        expected, got = set(signature.inputs), set(request.inputs)
        if expected != got:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"signature {signature_name!r} expects inputs "
                               f"{sorted(expected)}; missing {sorted(expected - got)}, "
                               f"unexpected {sorted(got - expected)}")
        feeds = {}
        for key, info in signature.inputs.items():
            proto = request.inputs[key]
            if proto.dtype != info.dtype:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"input {key!r} must be {tf.dtypes.as_dtype(info.dtype).name}"
                                   f", got {_dtype_name(proto.dtype)}")
            try:
                value = tf.make_ndarray(proto)
            except Exception as e:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"input {key!r}: malformed TensorProto ({e})") from e
            want = [d.size for d in info.tensor_shape.dim]
            if not info.tensor_shape.unknown_rank and (
                    len(want) != value.ndim or any(w not in (-1, v)
                                                   for w, v in zip(want, value.shape))):
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"input {key!r} must have shape {want} (-1: any), got "
                                   f"{list(value.shape)}")
            self.server.check_limits(key, value)
            feeds[key] = tf.constant(value)
        outputs = set(signature.outputs)
        wanted = list(request.output_filter) or sorted(outputs)
        unknown = set(wanted) - outputs
        if unknown:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"output_filter names {sorted(unknown)}, not outputs of "
                               f"signature {signature_name!r} ({sorted(outputs)})")
        try:
            results = loaded.functions[signature_name](**feeds)
        except tf.errors.InvalidArgumentError as e:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, e.message) from e
        except tf.errors.OpError as e:
            raise RequestError(grpc.StatusCode.INTERNAL, e.message) from e
        return {name: results[name].numpy() for name in wanted}


def _dtype_name(enum_value):
    try:
        return tf.dtypes.as_dtype(enum_value).name
    except TypeError:
        return f"dtype enum {enum_value}"


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server):
        self.server = server

    def Predict(self, request, context):
        with self.server.rpc_errors(context):
            model, version, signature_name, outputs = self.server.predict(request)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = model.name
            response.model_spec.version.value = version
            response.model_spec.signature_name = signature_name
            for name, value in outputs.items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return response

    def GetModelMetadata(self, request, context):
        with self.server.rpc_errors(context):
            fields = set(request.metadata_field)
            if fields != {"signature_def"}:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   "metadata_field must be exactly ['signature_def'], got "
                                   f"{sorted(fields)}")
            return self.server.model_metadata(request.model_spec)


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server):
        self.server = server

    def GetModelStatus(self, request, context):
        with self.server.rpc_errors(context):
            return self.server.model_status(request.model_spec)


class _RpcErrors:
    """Context manager mapping RequestError / unexpected errors to gRPC aborts."""

    def __init__(self, context):
        self.context = context

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if isinstance(error, RequestError):
            self.context.abort(error.code, str(error))  # raises; ends the RPC
        if isinstance(error, Exception):
            _log.error("internal error while serving a request", exc_info=error)
            self.context.abort(grpc.StatusCode.INTERNAL, f"internal error: {error}")
        return False


class ModelServer:
    """In-process TF Serving-compatible server (see module docstring).

    Args:
      models: {model name: base path} (each base path holds numeric version dirs), or
        None with `model_config_file`.
      model_config_file: ModelServerConfig text file (re-read on each poll).
      host, port: bind address; port 0 picks a free port (see `.port` after `start()`).
      max_num_samples, max_steps, max_support: per-request limits (INVALID_ARGUMENT).
      poll_seconds: how often the model directories (and config file) are re-scanned.
      max_message_mb: gRPC send/receive message size limit; also the largest REST
        request body.
      num_threads: gRPC worker threads; also the most REST requests handled at once.
      rest_api_port: None: no REST API; else its port on `host` (0 picks a free port,
        see `.rest_api_port` after `start()`).
      drawing_page: also serve the drawing page (export/static/) on the REST port, at
        `/draw/`; needs `rest_api_port`.
    """

    def __init__(self, models=None, model_config_file=None, host="127.0.0.1", port=8500,
                 max_num_samples=256, max_steps=1000, max_support=256, poll_seconds=2.0,
                 max_message_mb=64, num_threads=16, rest_api_port=None,
                 drawing_page=False):
        if bool(models) == bool(model_config_file):
            raise ConfigError("give exactly one of models (name -> base path) or "
                              "model_config_file")
        if drawing_page and rest_api_port is None:
            raise ConfigError("the drawing page is served on the REST API port: give "
                              "--rest_api_port (e.g. 8501, or -1 for a free one) with "
                              "--drawing_page")
        self.model_config_file = model_config_file
        self.host, self.port = host, port
        self.max_num_samples, self.max_steps = max_num_samples, max_steps
        self.max_support = max_support
        self.poll_seconds = poll_seconds
        self.max_message_bytes = int(max_message_mb * 1024 * 1024)
        self.num_threads = num_threads
        self.models = {}
        if models:
            for name, base_path in models.items():
                self.models[name] = ServedModel(self, name, base_path)
        self.rest_api_port = rest_api_port
        self.drawing_page = drawing_page
        self._stop = threading.Event()
        self._poller = None
        self._grpc = None
        self._rest = None

    # -- helpers used by the services ----------------------------------------------------
    def model(self, name):
        model = self.models.get(name)
        if model is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Latest({name})")
        return model

    def rpc_errors(self, context):
        return _RpcErrors(context)

    # -- the requests both APIs serve (gRPC servicers above, REST in export/rest.py) ------
    def predict(self, request, fill_inputs=None):
        """The one Predict path: model, version, validation, run.

        `fill_inputs(signature_def)`, when given, is called with the resolved SignatureDef
        before validation and fills `request.inputs` (REST: from the JSON body, whose
        values need the signature's dtypes).

        Returns (ServedModel, version, signature name, {output name: ndarray}); raises
        RequestError.
        """
        model = self.model(request.model_spec.name)
        version, loaded = model.resolve(request.model_spec)
        signature_name = request.model_spec.signature_name or "serving_default"
        if fill_inputs is not None:
            fill_inputs(loaded.signature(signature_name))
        return model, version, signature_name, model.predict_with(loaded, request)

    def model_metadata(self, model_spec):
        """-> GetModelMetadataResponse (the `signature_def` field) for `model_spec`."""
        model = self.model(model_spec.name)
        version, loaded = model.resolve(model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, sig in loaded.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(sig)
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def model_status(self, model_spec):
        """-> GetModelStatusResponse: every known version of the model, or the one asked
        for (each with its state and a status: OK, or INTERNAL with the load error)."""
        name = model_spec.name
        model = self.models.get(name)
        statuses = dict(model.statuses) if model else {}
        if not statuses:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Could not find any versions of model {name}")
        if model_spec.version_label:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Unrecognized servable version label: "
                               f"{model_spec.version_label}")
        if model_spec.HasField("version"):
            version = model_spec.version.value
            if version not in statuses:
                raise RequestError(grpc.StatusCode.NOT_FOUND,
                                   f"Could not find version {version} of model {name}")
            statuses = {version: statuses[version]}
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in sorted(statuses):
            state, error = statuses[version]
            entry = response.model_version_status.add(version=version, state=state)
            entry.status.SetInParent()  # error_code OK, as TF Serving reports it
            if error:
                entry.status.error_code = 13  # INTERNAL (tensorflow.error.Code)
                entry.status.error_message = error
        return response

    def check_limits(self, key, value):
        if key in _SCALAR_LIMITS:
            low, attribute = _SCALAR_LIMITS[key]
            high = getattr(self, attribute)
            if not low <= int(value) <= high:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"{key}={int(value)} is outside [{low}, {high}]")
        elif key == "support_images" and not 1 <= value.shape[0] <= self.max_support:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"support_images holds {value.shape[0]} images; give 1 to "
                               f"{self.max_support}")

    # -- lifecycle -------------------------------------------------------------------------
    def refresh(self):
        """One poll: re-read the config file (if any), then refresh every model."""
        if self.model_config_file:
            entries = load_model_config(self.model_config_file)
            names = {e.name for e in entries}
            for entry in entries:
                if entry.name not in self.models:
                    self.models[entry.name] = ServedModel(self, entry.name, entry.base_path,
                                                          entry.model_version_policy)
            for name in list(self.models):
                if name not in names:
                    del self.models[name]  # requests now get NOT_FOUND
        for model in list(self.models.values()):
            model.refresh()

    def _poll(self):
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # keep polling: a bad config edit must not kill the server
                _log.exception("model refresh failed")

    def start(self):
        """Loads the models, binds, starts serving (gRPC, and REST when asked) and
        polling; returns the bound gRPC port."""
        self.refresh()
        options = [("grpc.max_send_message_length", self.max_message_bytes),
                   ("grpc.max_receive_message_length", self.max_message_bytes),
                   ("grpc.so_reuseport", 0)]
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(self.num_threads),
                             options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionService(self), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self), server)
        address = f"{self.host}:{self.port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as e:
            raise ConfigError(f"cannot bind {address} ({e}); is the port in use?") from e
        if port == 0:
            raise ConfigError(f"cannot bind {address}; is the port in use?")
        self.port = port
        server.start()
        self._grpc = server
        if self.rest_api_port is not None:
            from export.rest import RestServer

            try:
                self._rest = RestServer(self, self.host, self.rest_api_port)
            except ConfigError:
                server.stop(0).wait()
                self._grpc = None
                raise
            self.rest_api_port = self._rest.port
            self._rest.start()
        self._poller = threading.Thread(target=self._poll, name="model-poller", daemon=True)
        self._poller.start()
        return port

    def stop(self, grace=5.0):
        """Stops polling, then the REST and gRPC servers (in-flight requests get `grace`
        seconds)."""
        self._stop.set()
        if self._rest is not None:
            self._rest.stop(grace)
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
        if self._poller is not None:
            self._poller.join()


def _define_flags():
    from absl import flags

    flags.DEFINE_string("model_config_file", None, "ModelServerConfig text file.")
    flags.DEFINE_string("model_base_path", None, "Directory of numeric version dirs.")
    flags.DEFINE_string("model_name", None, "Name of --model_base_path's model "
                        "(default: its directory name).")
    flags.DEFINE_string("host", "127.0.0.1", "Address to bind (loopback by default).")
    flags.DEFINE_integer("port", 8500, "gRPC port (0: pick a free one).")
    flags.DEFINE_integer("rest_api_port", 0, "REST API port (TF Serving uses 8501; 0: no "
                         "REST API, as in TF Serving; -1: pick a free one).")
    flags.DEFINE_boolean("drawing_page", False, "Also serve the drawing page (draw a few "
                         "examples, see samples adapted to them) on the REST API port at "
                         "/draw/; needs --rest_api_port. docs/DRAWING_PAGE.md.")
    flags.DEFINE_integer("max_num_samples", 256, "Largest num_samples per request.")
    flags.DEFINE_integer("max_steps", 1000, "Largest adaptation steps per request.")
    flags.DEFINE_float("poll_seconds", 2.0, "Model directory polling period.")
    flags.DEFINE_float("max_message_mb", 64, "gRPC message size limit (MiB).")
    flags.DEFINE_float("grace_seconds", 5.0, "Shutdown grace for in-flight requests.")


def main(argv):
    from absl import flags

    del argv
    f = flags.FLAGS
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        if bool(f.model_config_file) == bool(f.model_base_path):
            raise ConfigError("give exactly one of --model_config_file or --model_base_path")
        models = None
        if f.model_base_path:
            if not os.path.isdir(f.model_base_path):
                raise ConfigError(f"--model_base_path={f.model_base_path!r} is not a "
                                  "directory (expected <base>/<model_name> holding version "
                                  "directories 1/, 2/, ...)")
            name = f.model_name or os.path.basename(os.path.normpath(f.model_base_path))
            models = {name: f.model_base_path}
        if f.rest_api_port < -1 or f.rest_api_port > 65535:
            raise ConfigError(f"--rest_api_port={f.rest_api_port} is not a port (0: no REST "
                              "API, -1: pick a free one)")
        rest_api_port = {0: None, -1: 0}.get(f.rest_api_port, f.rest_api_port)
        server = ModelServer(models, f.model_config_file, f.host, f.port, f.max_num_samples,
                             f.max_steps, poll_seconds=f.poll_seconds,
                             max_message_mb=f.max_message_mb, rest_api_port=rest_api_port,
                             drawing_page=f.drawing_page)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        port = server.start()
    except ConfigError as e:
        sys.exit(f"error: {e}")
    for name, model in sorted(server.models.items()):
        print(f"model {name}: versions {sorted(model.versions) or 'none yet'} "
              f"from {model.base_path}", flush=True)
    if server.rest_api_port is not None:
        print(f"REST API listening on {server.host}:{server.rest_api_port}", flush=True)
    if server.drawing_page:
        host = f"[{server.host}]" if ":" in server.host else server.host
        print(f"drawing page at http://{host}:{server.rest_api_port}/draw/", flush=True)
        if server.host not in ("127.0.0.1", "localhost", "::1"):
            _log.warning("--host=%s: the drawing page and both APIs are open to anyone who "
                         "can reach this address (no authentication)", server.host)
    print(f"listening on {server.host}:{port}", flush=True)
    while not stop.wait(1.0):
        pass
    print("shutting down", flush=True)
    server.stop(f.grace_seconds)


if __name__ == "__main__":
    from absl import app

    # Run the importable module's main, not this `__main__` copy: export/rest.py imports
    # `export.serve`, and its RequestError must be the class the server raises.
    from export import serve

    serve._define_flags()
    app.run(serve.main)
