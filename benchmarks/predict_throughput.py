"""Prediction throughput: sparktf.predict_udf vs pyspark.ml.functions.predict_batch_udf.

    .venv/bin/python benchmarks/predict_throughput.py [--rows 200000] [--repeat 1]

Both run the same Keras 3 export of the MNIST CNN (examples/mnist/keras/mnist_model.py,
``model.export``) through the same ``tf.saved_model.load(...).signatures
["serving_default"]`` with the same batch size, on the same cached DataFrames,
on local-cluster[2,1,2048], writing to Spark's ``noop`` sink (every prediction
is computed and converted, nothing is stored).  Two inputs:

* ``image array<float>`` (784 values per row);
* ``pixels binary`` (784 raw uint8 bytes per row, cast to float32 by the model feed).

And two precisions: float32 (as exported) and bfloat16 (``precision="bfloat16"``:
TensorFlow's oneDNN mixed-precision rewrite, see sparktf/serving/precision.py),
which the baseline's ``make_predict_fn`` switches on around its model calls the
same way, so each ratio compares the two UDFs running the same arithmetic.

Each variant first runs twice on a small warm-up DataFrame of 8 partitions
(both executors' Python workers import TensorFlow and load the model), then
on all rows.  Where the time goes, measured in the same run:

* Spark's own ceiling for the input alone (``mapInArrow`` counting the rows of
  the same column: the JVM's conversion to Arrow and the transfer);
* each UDF with a *null model* (a SavedModel with the same input and output
  shapes that returns 10 of the pixels): the UDF's own cost on top of that;
* the model alone (the signature on numpy batches) in 2 processes at once, with 1 TF
  thread each (as both UDFs run it here: sparktf sizes TensorFlow's pools to the task's
  core, and the baseline's ``make_predict_fn`` does the same) and with 2 (TensorFlow's
  default): the floor both UDFs stand on;
* for every run, the CPU seconds spent by the executor JVMs and by the Python
  workers (from /proc, this benchmark's processes only): on a shared machine
  they vary much less than wall time, and they show where the time goes.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import common

#: The processes whose CPU time is reported (see ``common.cpu_seconds``).
PREDICT_KINDS = ("executor JVMs", "Python workers")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples", "mnist", "keras"))

BATCH = 1024


def export_model(path: str) -> str:
    """The MNIST CNN (random weights: throughput does not depend on them), as Keras 3 export."""
    import tensorflow as tf

    import mnist_model
    model = mnist_model.build_model(tf)
    model.export(path, verbose=False)
    return path


def export_null_model(path: str) -> str:
    """Same signature shapes as the CNN ((None, 28, 28, 1) -> output_0 (None, 10)), no compute."""
    import tensorflow as tf

    class Null(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32,
                                                    name="keras_tensor")])
        def serve(self, x):
            return {"output_0": tf.reshape(x, [-1, 784])[:, :10]}

    null = Null()
    tf.saved_model.save(null, path, signatures={"serving_default": null.serve})
    return path


def binary_df(df):
    """``df``'s ``image`` (floats in [0, 1]) as 784 raw uint8 bytes per row, in ``pixels``."""
    import pyarrow as pa

    def to_bytes(batches):
        import numpy as np
        for b in batches:
            images = b.column("image").flatten().to_numpy(zero_copy_only=False)
            data = (images * 255).astype(np.uint8)
            offsets = np.arange(b.num_rows + 1, dtype=np.int32) * 784
            pixels = pa.BinaryArray.from_buffers(pa.binary(), b.num_rows,
                                                 [None, pa.py_buffer(offsets),
                                                  pa.py_buffer(data)])
            yield pa.RecordBatch.from_arrays([pixels, b.column("label")], ["pixels", "label"])

    out = df.mapInArrow(to_bytes, "pixels binary, label long").cache()
    out.count()
    return out


def make_baseline_fn(export: str, binary: bool, precision: str = "float32"):
    """``make_predict_fn`` for predict_batch_udf: the same signature on numpy batches.

    It sizes TensorFlow's thread pools to the task's cores as sparktf does, so
    both UDFs run the model with the same threads (the Python workers are
    shared by both UDFs, and TensorFlow's pools are fixed by whichever import
    comes first in a worker: without this the order of the variants would
    decide which one runs with TensorFlow's default of every core).
    """
    def make():
        import numpy as np
        import tensorflow as tf
        from pyspark import TaskContext
        cpus = TaskContext.get().cpus()
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cpus)
            tf.config.threading.set_inter_op_parallelism_threads(cpus)
        except RuntimeError:        # TensorFlow already runs in this worker
            pass
        threads = tf.config.threading.get_intra_op_parallelism_threads()
        if threads != cpus:
            raise RuntimeError(f"this worker's TensorFlow runs {threads} threads, not {cpus}")
        from sparktf.serving.precision import applied   # the switch sparktf uses
        fn = tf.saved_model.load(export).signatures["serving_default"]
        (name,) = fn.structured_input_signature[1]

        def predict(x):
            if binary:   # an object array of 784-byte values
                x = np.frombuffer(b"".join(x), np.uint8).reshape(-1, 28, 28, 1)
            with applied(tf, precision):
                return fn(**{name: tf.constant(x, tf.float32)})["output_0"].numpy()
        return predict
    return make


def model_only(export: str, rows: int, processes: int, threads: int) -> tuple[float, float]:
    """Wall and CPU seconds for the signature alone on ``rows`` rows (batches of BATCH, numpy in and
    out), split over ``processes`` processes running at once with ``threads`` TF threads each.

    ``2 x 1 thread`` is the model's floor on local-cluster[2,1,...] as sparktf sizes
    TensorFlow (one thread per task core), and the benchmark sizes predict_batch_udf's the
    same; ``2 x 2 threads`` is TensorFlow's default (every core of the machine in each process).
    """
    import subprocess
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--model-only",
                               export, str(rows // processes), str(threads)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(processes)]
    def line(p, word):
        for text in p.stdout:
            if text.startswith(word):
                return text
        raise RuntimeError(f"the model-only process exited with {p.wait()}")

    for p in procs:                      # each has imported TF, loaded and warmed the model
        line(p, "ready")
    t0 = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    cpu = sum(float(line(p, "done").split()[1]) for p in procs)
    wall = time.perf_counter() - t0
    for p in procs:
        p.wait()
    return wall, cpu


def _model_only_process(export: str, rows: int, threads: int) -> None:
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    fn = tf.saved_model.load(export).signatures["serving_default"]
    (name,) = fn.structured_input_signature[1]
    x = np.random.default_rng(0).random((BATCH, 28, 28, 1), dtype=np.float32)
    fn(**{name: tf.constant(x)})
    print("ready", flush=True)
    sys.stdin.readline()
    cpu = time.process_time()
    for start in range(0, rows, BATCH):
        fn(**{name: tf.constant(x[:min(BATCH, rows - start)])})["output_0"].numpy()
    print(f"done {time.process_time() - cpu}", flush=True)


def main() -> None:
    args = common.parse_args(__doc__)
    args.repeat = args.repeat if "--repeat" in sys.argv else 1
    sc = common.spark_context()
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    import sparktf

    tmp = tempfile.mkdtemp(prefix="sparktf-bench-")
    export = export_model(os.path.join(tmp, "mnist"))
    null_export = export_null_model(os.path.join(tmp, "null"))
    df = common.mnist_like_df(sc, args.rows, args.partitions)
    bdf = binary_df(df)
    warm = common.mnist_like_df(sc, 4096, 8)
    warm_b = binary_df(warm)
    results: dict[str, float] = {}
    cpu: dict[str, dict[str, float]] = {}

    def measured(name, fn):
        before = common.cpu_seconds(PREDICT_KINDS)
        results[name] = common.median_time(name, args.rows, fn, args.repeat)
        after = common.cpu_seconds(PREDICT_KINDS)
        cpu[name] = {k: (after[k] - before[k]) / args.repeat for k in after}
        print("    CPU s per run: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu[name].items()),
              flush=True)

    def run(name, data, warm_data, column):
        def once(frame):
            frame.select(column.alias("p")).write.format("noop").mode("overwrite").save()
        once(warm_data)
        once(warm_data)
        measured(name, lambda: once(data))

    def count_arrow(frame, col):
        def count(batches):
            import pyarrow as pa
            n = 0
            for b in batches:
                n += b.num_rows
            yield pa.RecordBatch.from_arrays([pa.array([n])], ["n"])
        return frame.select(col).mapInArrow(count, "n long").agg(F.sum("n")).collect()

    for kind, data, warm_data, col in (("array<float>", df, warm, "image"),
                                       ("binary", bdf, warm_b, "pixels")):
        measured(f"Spark input ceiling, {kind} (mapInArrow)", lambda: count_arrow(data, col))
        for model, label, precision in ((null_export, ", null model", "float32"),
                                        (export, "", "float32"),
                                        (export, ", bfloat16", "bfloat16")):
            ours = sparktf.predict_udf(model, batch_size=BATCH, precision=precision)
            run(f"sparktf.predict_udf, {kind}{label}", data, warm_data, ours(col))
            theirs = predict_batch_udf(make_baseline_fn(model, kind == "binary", precision),
                                       return_type=T.ArrayType(T.FloatType()),
                                       batch_size=BATCH,
                                       input_tensor_shapes=None if kind == "binary"
                                       else [[28, 28, 1]])
            run(f"predict_batch_udf, {kind}{label}", data, warm_data, theirs(col))

    for processes, threads in ((2, 1), (2, 2)):
        name = f"model alone, {processes} processes x {threads} TF thread(s)"
        results[name], model_cpu = model_only(export, args.rows, processes, threads)
        cpu[name] = {"executor JVMs": 0.0, "Python workers": model_cpu}
        print(f"  {name}: {results[name]:.2f} s ({args.rows / results[name]:,.0f} rows/s), "
              f"{model_cpu:.1f} CPU s", flush=True)
    print("\nCPU seconds per run (executor JVMs + Python workers = total):")
    for name, parts in cpu.items():
        print(f"  {name:<40} {parts['executor JVMs']:6.1f} + {parts['Python workers']:6.1f} = "
              f"{sum(parts.values()):6.1f}")
    kinds = ("array<float>", "binary")
    labels = ("", ", bfloat16", ", null model")
    for kind in kinds:
        for label in labels:
            ours = sum(cpu[f"sparktf.predict_udf, {kind}{label}"].values())
            theirs = sum(cpu[f"predict_batch_udf, {kind}{label}"].values())
            print(f"  CPU seconds, predict_batch_udf / sparktf.predict_udf, {kind}{label}: "
                  f"{theirs / ours:.2f}x")
    common.report("Prediction throughput", args.rows, results,
                  [(f"sparktf.predict_udf, {k}{label}", f"predict_batch_udf, {k}{label}",
                    1.0 if label == ", null model" else 1.2) for k in kinds for label in labels]
                  + [(f"sparktf.predict_udf, {k}, bfloat16", f"predict_batch_udf, {k}", 1.2)
                     for k in kinds])
    sc.stop()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--model-only"]:
        _model_only_process(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
