"""map_fun bodies for the SPARK-mode tests (pickled by value to the executors)."""

import json
import os
import time


def _write(args, ctx, name, data):
    with open(os.path.join(args["out"], f"{name}-{ctx.executor_id}.json"), "w") as f:
        json.dump(data, f)


def count_rows(args, ctx):
    """Read everything with next_batch; record rows and the sum of ids."""
    from sparktf import TFNode
    feed = TFNode.DataFeed(ctx.mgr)
    rows = ids = 0
    while not feed.should_stop():
        batch = feed.next_batch(100)
        if not batch:
            break
        rows += len(batch)
        for r in batch:
            ids += int(r["id"] if isinstance(r, dict) else r[1])
    _write(args, ctx, "count", {"rows": rows, "ids": ids})


def fit_dataset(args, ctx):
    """MWMS tf-keras fit on the tf.data fast path, one dataset iteration per fed epoch."""
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    feed = ctx.get_data_feed()
    rows_seen = [0]
    ids_seen = []
    steps = []

    class Steps(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            steps.append(0)

        def on_train_batch_end(self, batch, logs=None):
            steps[-1] += 1

    if args.get("span"):   # one iteration for all epochs, steps known ahead (cached feed)
        ds = feed.dataset(args["batch_size"], epochs=args["epochs"])
        fit_steps = feed.steps_per_epoch(strategy)
    else:
        ds, fit_steps = feed.dataset(args["batch_size"]), None

    def seen(ids):
        rows_seen[0] += len(ids)
        ids_seen.extend(ids.numpy().tolist())

    def counted(x, id_):
        tf.py_function(seen, [id_], [])
        return x, tf.cast(id_ % 2, tf.float32)

    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
        model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse")
    hist = model.fit(ds.map(counted), epochs=args["epochs"], verbose=0, callbacks=[Steps()],
                     steps_per_epoch=fit_steps)
    _write(args, ctx, "fit", {"rows": rows_seen[0], "ids": ids_seen, "steps": steps,
                              "steps_per_epoch": fit_steps,
                              "epochs": len(hist.history["loss"]),
                              "weights": [w.tolist() for w in model.get_weights()]})


def _answer_batches(ctx, size, results_of):
    """Inference: read batches of ``size`` rows until the feed ends, answering each with
    ``results_of(batch)``."""
    feed = ctx.get_data_feed(train_mode=False)
    while not feed.should_stop():
        batch = feed.next_batch(size)
        if not batch:
            break
        feed.batch_results(results_of(batch))


def infer_double(args, ctx):
    """Inference: one result (2 * id) per row."""
    _answer_batches(ctx, 7, lambda batch: [2 * int(r[1]) for r in batch])


def infer_pixels(args, ctx):
    """Inference: each row's pixels' dtype, sum and last value, as text."""
    _answer_batches(ctx, 16, lambda batch: [f"{r[0].dtype} {int(r[0].sum())} {int(r[0][-1])}"
                                            for r in batch])


def infer_frame(args, ctx):
    """Inference on DataFrame rows (dicts): two result columns, 2 * id and [id, 1.0]."""
    import pyarrow as pa

    def results_of(batch):
        ids = [int(r["id"]) for r in batch]
        return pa.RecordBatch.from_pydict(
            {"twice": [2 * i for i in ids], "vec": [[float(i), 1.0] for i in ids]})

    _answer_batches(ctx, 64, results_of)


def infer_short(args, ctx):
    """Inference that returns one result too few."""
    feed = ctx.get_data_feed(train_mode=False)
    batch = feed.next_batch(10)
    feed.batch_results([0] * (len(batch) - 1))


def terminate_early(args, ctx):
    feed = ctx.get_data_feed()
    feed.next_batch(10)
    feed.terminate()
    _write(args, ctx, "terminated", {"ok": True})


def crash_after_first_batch(args, ctx):
    feed = ctx.get_data_feed()
    feed.next_batch(10)
    if ctx.task_index == 1:
        raise RuntimeError("node exploded mid-feed")
    while not feed.should_stop():
        if not feed.next_batch(100):
            break


def stall(args, ctx):
    time.sleep(3600)


def mwms_next_batch(args, ctx):
    """MWMS training driven by next_batch: every node gets the same row count here."""
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    feed = ctx.get_data_feed(input_mapping={"_0": "x", "_1": "y"})
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
        model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse")
    steps = rows = 0
    while not feed.should_stop():
        batch = feed.next_batch(args["batch_size"])
        if len(batch["x"]) < args["batch_size"]:
            rows += len(batch["x"])
            break
        model.train_on_batch(batch["x"], (batch["y"] % 2).astype("float32"))
        steps += 1
        rows += len(batch["x"])
    _write(args, ctx, "nb", {"steps": steps, "rows": rows,
                             "weights": [w.tolist() for w in model.get_weights()]})


def slow_reader_memory(args, ctx):
    """Read slowly and record how much the node's peak memory grew."""
    import resource
    import time as t
    feed = ctx.get_data_feed(input_mapping={"_1": "y"})
    feed.next_batch(1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = 1
    while not feed.should_stop():
        batch = feed.next_batch(2048)
        if not len(batch["y"]):
            break
        rows += len(batch["y"])
        t.sleep(0.25)  # ~40 batches per node: feeding outlasts one 5 s progress interval
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _write(args, ctx, "mem", {"rows": rows, "growth_mb": (peak - base) / 1024})


def stall_then_read(args, ctx):
    """Take one row, read nothing for a while (the feeders fill what the node buffers),
    record how much the node's peak memory grew, then read the rest."""
    import resource
    import time as t
    feed = ctx.get_data_feed()
    feed.next_batch(1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t.sleep(args["stall"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = 1
    while not feed.should_stop():
        batch = feed.next_batch(64)
        if not batch:
            break
        rows += len(batch)
    _write(args, ctx, "stall", {"rows": rows, "growth_mb": (peak - base) / 1024})


def check_release_port(args, ctx):
    import socket
    bound = ctx.tmp_socket is not None and ctx.tmp_socket.getsockname()[1] == ctx.tf_port
    probe = socket.socket()
    try:
        probe.bind((ctx.host, ctx.tf_port))
        taken_before = False
    except OSError:
        taken_before = True
    probe.close()
    ctx.release_port()
    probe = socket.socket()
    probe.bind((ctx.host, ctx.tf_port))  # free now
    probe.close()
    _write(args, ctx, "port", {"bound": bound, "taken_before": taken_before})


def read_ten_then_return(args, ctx):
    """Read 10 rows, wait until the driver's train() returned (the test writes a file),
    and return with the rest of the fed rows unread."""
    feed = ctx.get_data_feed()
    feed.next_batch(10)
    go = os.path.join(args["out"], "go")
    while not os.path.exists(go):
        time.sleep(0.05)
