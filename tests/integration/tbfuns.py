"""map_funs for tests/integration/test_tensorboard_remote.py (pickled by value by that test)."""

from __future__ import annotations

import json
import os
import time


def fit_and_record(args, ctx):
    """Record the node's log_dir and log_url, then Keras fit with TensorBoard until told to stop."""
    import numpy as np
    import tensorflow as tf

    with open(os.path.join(args["out"], f"ctx-{ctx.job_name}-{ctx.task_index}.json"), "w") as f:
        json.dump({"log_dir": ctx.log_dir, "log_url": ctx.log_url}, f)
    rng = np.random.default_rng(ctx.worker_num)
    x = rng.random((64, 4), dtype=np.float32)
    y = x.sum(axis=1, keepdims=True)
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    callback = tf.keras.callbacks.TensorBoard(log_dir=ctx.log_dir)
    stop = os.path.join(args["out"], "stop")
    deadline = time.time() + 240
    epoch = 0
    while not os.path.exists(stop) and time.time() < deadline:
        model.fit(x, y, initial_epoch=epoch, epochs=epoch + 1, verbose=0, callbacks=[callback])
        epoch += 1
        time.sleep(0.2)
