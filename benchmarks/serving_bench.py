"""Serving latency/throughput: gRPC Predict against `export.serve` vs an in-process call.

For 16-sample `serving_default` requests with 1, 8 and 32 concurrent clients, prints one
machine-readable line per (mode, concurrency):

    serving_bench mode=grpc signature=serving_default concurrency=8 requests=128 \
        p50_ms=... p99_ms=... rps=...

`mode=grpc`: the official PredictionServiceStub over loopback to `python -m export.serve`
running in a subprocess (so client threads do not share the server's GIL).
`mode=inprocess`: the same SavedModel loaded with `tf.saved_model.load`, signature called
directly from the same number of threads. One extra line times `adapt_and_sample`
(`--adapt_steps` steps, 5 support images) at concurrency 1.

    python -m benchmarks.serving_bench [--model_base_path <base>/<name>]

Without `--model_base_path`, exports the test toy generator (tests/serving_toy.py) to a
temporary directory. Request counts are bounded (`--requests_per_client`, at most
`--max_requests` per level); the server binds 127.0.0.1 only.
"""

import concurrent.futures
import os
import subprocess
import sys
import tempfile
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
FLAGS = flags.FLAGS
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _percentile(values, q):
    import numpy as np

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


def _report(mode, signature, concurrency, latencies, wall, extra=""):
    print(f"serving_bench mode={mode} signature={signature} {extra}concurrency={concurrency} "
          f"requests={len(latencies)} num_samples={FLAGS.num_samples} "
          f"p50_ms={_percentile(latencies, 50):.2f} p99_ms={_percentile(latencies, 99):.2f} "
          f"rps={len(latencies) / wall:.1f}", flush=True)


def _export_toy(tmp):
    sys.path.insert(0, os.path.join(_REPO, "tests"))
    from serving_toy import ToyGenerativeModule

    from export.export_saved_model import export_generative_module

    export_generative_module(ToyGenerativeModule(), tmp, "toy")
    return os.path.join(tmp, "toy")


def _start_server(model_base_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "export.serve", "--model_base_path", model_base_path,
         "--model_name", "bench", "--port", "0", "--host", "127.0.0.1",
         "--max_num_samples", str(max(256, FLAGS.num_samples))],
        cwd=_REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("listening on "):
            return proc, int(line.rsplit(":", 1)[1])
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
        proc, port = _start_server(model_base_path)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                sample_request = request("serving_default", sample_inputs)
                drawn = tf.make_ndarray(stub.Predict(sample_request, timeout=60)
                                        .outputs["images"])
                for c in levels:
                    total = min(FLAGS.max_requests, c * FLAGS.requests_per_client)
                    latencies, wall = _run_level(
                        lambda i: stub.Predict(sample_request, timeout=60), c, total)
                    _report("grpc", "serving_default", c, latencies, wall)
                if FLAGS.adapt_requests:
                    # Realistic (never blank) support images: the model's own samples.
                    support = drawn[:5]
                    adapt_request = request("adapt_and_sample", dict(
                        support_images=support, steps=np.int32(FLAGS.adapt_steps),
                        **sample_inputs))
                    latencies, wall = _run_level(
                        lambda i: stub.Predict(adapt_request, timeout=120), 1,
                        FLAGS.adapt_requests)
                    _report("grpc", "adapt_and_sample", 1, latencies, wall,
                            extra=f"steps={FLAGS.adapt_steps} num_support=5 ")
        finally:
            proc.terminate()
            proc.wait(timeout=30)

        loaded = tf.saved_model.load(version_dir)
        fn = loaded.signatures["serving_default"]
        feeds = {k: tf.constant(v) for k, v in sample_inputs.items()}
        for c in levels:
            total = min(FLAGS.max_requests, c * FLAGS.requests_per_client)
            latencies, wall = _run_level(lambda i: fn(**feeds)["images"].numpy(), c, total)
            _report("inprocess", "serving_default", c, latencies, wall)


if __name__ == "__main__":
    app.run(main)
