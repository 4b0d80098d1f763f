"""map_fun consumers used by the benchmarks (they only count rows)."""


def sparktf_count(args, ctx):
    """Count rows through DataFeed.next_batch with input_mapping (whole numpy columns)."""
    feed = ctx.get_data_feed(input_mapping={args["column"]: "x"})
    rows = 0
    while not feed.should_stop():
        batch = feed.next_batch(args["batch_size"])
        if not len(batch["x"]):
            break
        rows += len(batch["x"])
    print("rows consumed:", rows)


def sparktf_count_tfdata(args, ctx):
    """Count rows through the tf.data fast path (one dataset iteration per epoch)."""
    ds = ctx.get_data_feed().dataset(args["batch_size"])  # imports TensorFlow
    rows = 0
    for epoch in range(args["epochs"]):
        for x, _ in ds:
            rows += int(x.shape[0])
    print("rows consumed:", rows)


def sparktf_count_graph(args, ctx):
    """Count rows of ``DataFeed.dataset()`` in a ``tf.function`` loop, as ``model.fit`` does."""
    import tensorflow as tf
    feed = ctx.get_data_feed()
    ds = feed.dataset(args["batch_size"])

    @tf.function
    def count(ds):
        n = tf.constant(0, tf.int64)
        for x, _ in ds:
            n += tf.shape(x, out_type=tf.int64)[0]
        return n

    rows = 0
    while not feed.should_stop():  # one dataset iteration per fed epoch
        rows += int(count(ds))
    print("rows consumed:", rows)


def sparktf_infer_columns(args, ctx):
    """Inference through input_mapping (whole numpy columns): return each row's label."""
    feed = ctx.get_data_feed(train_mode=False, input_mapping={args["column"]: "y"})
    while not feed.should_stop():
        batch = feed.next_batch(args["batch_size"])
        if not len(batch["y"]):
            break
        feed.batch_results(batch["y"])


def sparktf_infer(args, ctx):
    """Inference through next_batch / batch_results: return each row's label."""
    feed = ctx.get_data_feed(train_mode=False)
    while not feed.should_stop():
        batch = feed.next_batch(args["batch_size"])
        if not batch:
            break
        feed.batch_results([row[1] if isinstance(row, tuple) else row["label"] for row in batch])


def tfos_count(args, ctx):
    from tensorflowonspark import TFNode
    feed = TFNode.DataFeed(ctx.mgr, train_mode=True)
    rows = 0
    while not feed.should_stop():
        batch = feed.next_batch(args.batch_size)
        rows += len(batch)
    print("rows consumed:", rows)


def tfos_infer(args, ctx):
    from tensorflowonspark import TFNode
    feed = TFNode.DataFeed(ctx.mgr, train_mode=False)
    while not feed.should_stop():
        batch = feed.next_batch(args.batch_size)
        if len(batch) > 0:
            feed.batch_results([row[1] for row in batch])


def sparktf_infer_label(args, ctx):
    """DataFrame inference through next_batch / batch_results with input_mapping: the
    "prediction" is the row's label (only that column is decoded)."""
    import pyarrow as pa
    feed = ctx.get_data_feed(train_mode=False, input_mapping={"label": "label"})
    while not feed.should_stop():
        batch = feed.next_batch(args["batch_size"])
        if not len(batch["label"]):
            break
        feed.batch_results(pa.RecordBatch.from_pydict({"pred": batch["label"]}))
