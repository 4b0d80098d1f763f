"""map_fun for the encryption test (pickled by value to the executors)."""

import json
import os


def train_then_infer(args, ctx):
    """Fit y = 3 x0 - 2 x1 + 1 on the fed rows (x, marker, y), then answer inference
    batches with [prediction, *marker] per row; print the first fed marker, as text, to
    the node log."""
    import numpy as np
    import tensorflow as tf
    from sparktf import TFNode

    ds = ctx.get_data_feed().dataset(args["batch_size"])
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.3), loss="mse")
    model.fit(ds.map(lambda x, marker, y: (x, y)), epochs=args["epochs"], verbose=0)
    kernel, bias = model.get_weights()
    with open(os.path.join(args["out"], f"fit-{ctx.executor_id}.json"), "w") as f:
        json.dump({"kernel": kernel[:, 0].tolist(), "bias": float(bias[0])}, f)
    feed = TFNode.DataFeed(ctx.mgr, train_mode=False)
    printed = False
    while not feed.should_stop():
        batch = feed.next_batch(100)
        if not batch:
            break
        if not printed:
            print("marker text:", batch[0][1].tobytes().decode(), flush=True)
            printed = True
        x = np.stack([row[0] for row in batch])
        pred = model.predict_on_batch(x)[:, 0]
        feed.batch_results([np.concatenate([[p], row[1]]).astype(np.float32)
                            for p, row in zip(pred, batch)])
