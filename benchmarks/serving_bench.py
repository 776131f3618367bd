"""Serving latency/throughput: gRPC Predict and REST `:predict` against `export.serve` vs
an in-process call.

For 16-sample `serving_default` requests with 1, 8 and 32 concurrent clients, prints one
machine-readable line per (mode, concurrency):

    serving_bench mode=grpc signature=serving_default concurrency=8 requests=128 \
        p50_ms=... p99_ms=... rps=...

`mode=grpc`: the official PredictionServiceStub over loopback to `python -m export.serve`
running in a subprocess (so client threads do not share the server's GIL).
`mode=rest`: the same server's REST API (`--rest_api_port`), `POST
/v1/models/bench:predict` with `{"inputs": {...}}`, one keep-alive `http.client`
connection per client thread; a request counts only when it is HTTP 200 (the body is read,
not JSON-decoded, on the client).
`mode=inprocess`: the same SavedModel loaded with `tf.saved_model.load`, signature called
directly from the same number of threads. One extra line per protocol times
`adapt_and_sample` (`--adapt_steps` steps, 5 support images) at concurrency 1.

Load run (`mode=rest_load`, and `mode=grpc_load` with `--load_modes=rest,grpc`):
`--load_clients` clients each send `--load_requests` `serving_default` requests as fast as
they can; the line adds `errors=` (a failed request, a non-200 answer or a body that
differs from the first answer's: same seed, same images) and `seconds=`. The issue's bar
is `--load_clients=32 --load_requests=1000` with 0 errors; the defaults are quick.

    python -m benchmarks.serving_bench [--model_base_path <base>/<name>]

Without `--model_base_path`, exports the test toy generator (tests/serving_toy.py) to a
temporary directory. Request counts are bounded (`--requests_per_client`, at most
`--max_requests` per level); the server binds 127.0.0.1 only.
"""

import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from absl import app, flags, logging

from tfmeta.runtime import quiet_tensorflow

flags.DEFINE_string("model_base_path", None, "Exported model (<base>/<name>); default: toy.")
flags.DEFINE_integer("num_samples", 16, "Samples per request.")
flags.DEFINE_list("concurrency", ["1", "8", "32"], "Concurrent client counts.")
flags.DEFINE_integer("requests_per_client", 16, "Requests per client thread.")
flags.DEFINE_integer("max_requests", 512, "Upper bound on requests per level.")
flags.DEFINE_integer("adapt_steps", 20, "Inner steps for the adapt_and_sample line.")
flags.DEFINE_integer("adapt_requests", 8, "adapt_and_sample requests (0: skip).")
flags.DEFINE_list("modes", ["grpc", "rest", "inprocess"], "Which of grpc, rest, inprocess "
                  "to time per concurrency level.")
flags.DEFINE_integer("load_clients", 8, "Load run: concurrent clients (0: no load run).")
flags.DEFINE_integer("load_requests", 25, "Load run: requests per client.")
flags.DEFINE_list("load_modes", ["rest"], "Load run protocols: rest, grpc.")
FLAGS = flags.FLAGS
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _percentile(values, q):
    import numpy as np

    if not len(values):
        return float("nan")
    return float(np.percentile(np.asarray(values) * 1e3, q))


def _run_level(call, concurrency, total):
    """Runs `total` calls over `concurrency` threads -> (latencies s, wall s)."""
    def timed(i):
        start = time.perf_counter()
        call(i)
        return time.perf_counter() - start

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(timed, range(concurrency)))  # warm each thread/connection
        start = time.perf_counter()
        latencies = list(pool.map(timed, range(total)))
        wall = time.perf_counter() - start
    return latencies, wall


def _report(mode, signature, concurrency, latencies, wall, extra="", tail=""):
    print(f"serving_bench mode={mode} signature={signature} {extra}concurrency={concurrency} "
          f"requests={len(latencies)} num_samples={FLAGS.num_samples} "
          f"p50_ms={_percentile(latencies, 50):.2f} p99_ms={_percentile(latencies, 99):.2f} "
          f"rps={len(latencies) / wall:.1f}{tail}", flush=True)


class _RestClient:
    """POSTs JSON to one REST endpoint over one keep-alive connection per thread."""

    def __init__(self, port, path):
        self.port, self.path = port, path
        self._local = threading.local()

    def post(self, body):
        """-> (HTTP status, response bytes); reconnects after a failed request."""
        import http.client

        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                                 timeout=120)
        try:
            conn.request("POST", self.path, body=body,
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        except Exception:
            conn.close()
            self._local.conn = None
            raise

    def ok(self, body):
        status, data = self.post(body)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:300]!r}")
        return data


def _load(mode, call, clients, requests_per_client, expected):
    """`clients` threads x `requests_per_client` calls; errors: exceptions or answers that
    differ from `expected` -> (latencies of the good ones, wall s, errors)."""
    errors, lock = [0], threading.Lock()

    def client(_):
        latencies = []
        for _ in range(requests_per_client):
            start = time.perf_counter()
            try:
                good = call() == expected
            except Exception as e:  # counted, and the first few shown
                good = False
                if errors[0] < 3:
                    print(f"serving_bench {mode} error: {e}", file=sys.stderr, flush=True)
            if good:
                latencies.append(time.perf_counter() - start)
            else:
                with lock:
                    errors[0] += 1
        return latencies

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        latencies = [t for part in pool.map(client, range(clients)) for t in part]
        wall = time.perf_counter() - start
    return latencies, wall, errors[0]


def _export_toy(tmp):
    sys.path.insert(0, os.path.join(_REPO, "tests"))
    from serving_toy import ToyGenerativeModule

    from export.export_saved_model import export_generative_module

    export_generative_module(ToyGenerativeModule(), tmp, "toy")
    return os.path.join(tmp, "toy")


def _start_server(model_base_path):
    """-> (process, gRPC port, REST port)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "export.serve", "--model_base_path", model_base_path,
         "--model_name", "bench", "--port", "0", "--rest_api_port", "-1",
         "--host", "127.0.0.1", "--max_num_samples", str(max(256, FLAGS.num_samples))],
        cwd=_REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    rest_port = None
    for line in proc.stdout:
        if line.startswith("REST API listening on "):
            rest_port = int(line.rsplit(":", 1)[1])
        if line.startswith("listening on "):
            return proc, int(line.rsplit(":", 1)[1]), rest_port
    proc.wait()
    raise RuntimeError(f"export.serve exited with {proc.returncode} before listening")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # TF's SavedModel INFO lines are noise here
    quiet_tensorflow()
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    for flag, allowed in [("modes", {"grpc", "rest", "inprocess"}),
                          ("load_modes", {"grpc", "rest"})]:
        unknown = set(FLAGS[flag].value) - allowed
        if unknown:
            raise app.UsageError(f"--{flag}: unknown {sorted(unknown)}; choose from "
                                 f"{sorted(allowed)}")
    levels = [int(c) for c in FLAGS.concurrency]
    with tempfile.TemporaryDirectory() as tmp:
        model_base_path = FLAGS.model_base_path or _export_toy(tmp)
        versions = sorted(int(v) for v in os.listdir(model_base_path) if v.isdigit())
        version_dir = os.path.join(model_base_path, str(versions[-1]))

        def request(signature, inputs):
            r = predict_pb2.PredictRequest()
            r.model_spec.name = "bench"
            r.model_spec.signature_name = signature
            for key, value in inputs.items():
                r.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            return r

        sample_inputs = {"seed": np.int64(0), "num_samples": np.int32(FLAGS.num_samples)}
        sample_json = json.dumps({"inputs": {k: v.item() for k, v in sample_inputs.items()}})
        proc, port, rest_port = _start_server(model_base_path)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                rest = _RestClient(rest_port, "/v1/models/bench:predict")
                sample_request = request("serving_default", sample_inputs)
                drawn = tf.make_ndarray(stub.Predict(sample_request, timeout=60)
                                        .outputs["images"])
                calls = {"grpc": lambda: stub.Predict(sample_request, timeout=60),
                         "rest": lambda: rest.ok(sample_json)}
                for mode in [m for m in FLAGS.modes if m in calls]:
                    for c in levels:
                        total = min(FLAGS.max_requests, c * FLAGS.requests_per_client)
                        latencies, wall = _run_level(lambda i: calls[mode](), c, total)
                        _report(mode, "serving_default", c, latencies, wall)
                if FLAGS.adapt_requests:
                    # Realistic (never blank) support images: the model's own samples.
                    support = drawn[:5]
                    adapt_inputs = dict(support_images=support,
                                        steps=np.int32(FLAGS.adapt_steps), **sample_inputs)
                    adapt_request = request("adapt_and_sample", adapt_inputs)
                    adapt_json = json.dumps({"signature_name": "adapt_and_sample", "inputs": {
                        k: v.tolist() for k, v in adapt_inputs.items()}})
                    adapt_calls = {
                        "grpc": lambda i: stub.Predict(adapt_request, timeout=120),
                        "rest": lambda i: rest.ok(adapt_json)}
                    for mode in [m for m in FLAGS.modes if m in adapt_calls]:
                        latencies, wall = _run_level(adapt_calls[mode], 1,
                                                     FLAGS.adapt_requests)
                        _report(mode, "adapt_and_sample", 1, latencies, wall,
                                extra=f"steps={FLAGS.adapt_steps} num_support=5 ")
                if FLAGS.load_clients:
                    expected = {"grpc": stub.Predict(sample_request, timeout=60),
                                "rest": rest.ok(sample_json)}
                    for mode in FLAGS.load_modes:
                        latencies, wall, errors = _load(
                            mode, calls[mode], FLAGS.load_clients, FLAGS.load_requests,
                            expected[mode])
                        _report(f"{mode}_load", "serving_default", FLAGS.load_clients,
                                latencies, wall,
                                extra=f"requests_per_client={FLAGS.load_requests} ",
                                tail=f" errors={errors} seconds={wall:.1f}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)

        if "inprocess" not in FLAGS.modes:
            return
        loaded = tf.saved_model.load(version_dir)
        fn = loaded.signatures["serving_default"]
        feeds = {k: tf.constant(v) for k, v in sample_inputs.items()}
        for c in levels:
            total = min(FLAGS.max_requests, c * FLAGS.requests_per_client)
            latencies, wall = _run_level(lambda i: fn(**feeds)["images"].numpy(), c, total)
            _report("inprocess", "serving_default", c, latencies, wall)


if __name__ == "__main__":
    app.run(main)
