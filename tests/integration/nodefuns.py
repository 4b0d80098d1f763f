"""map_fun bodies used by the integration tests (pickled by value to the executors)."""

import json
import os
import time


def report(args, ctx):
    """Write what the node saw to args['out']/node-<executor_id>.json.

    ``args`` is a dict, or an argv list with ``--out DIR`` (TFoS style).
    """
    import stat
    import sys
    if isinstance(args, list):
        args = {"out": args[args.index("--out") + 1]}
    modes = {name: oct(stat.S_IMODE(os.stat(os.path.join(ctx.node_dir, name)).st_mode))
             for name in (".", "spec.json", "payload.pkl")}
    info = {"argv": sys.argv, "node_dir": ctx.node_dir, "modes": modes,
            "executor_id": ctx.executor_id, "worker_num": ctx.worker_num,
            "job_name": ctx.job_name, "task_index": ctx.task_index,
            "cluster_spec": ctx.cluster_spec, "num_workers": ctx.num_workers,
            "tf_config": json.loads(os.environ["TF_CONFIG"]), "defaultFS": ctx.defaultFS,
            "working_dir": ctx.working_dir, "abs": ctx.absolute_path("x/y"),
            "legacy": os.environ.get("TF_USE_LEGACY_KERAS"), "pid": os.getpid(),
            "secret_env": [k for k in os.environ if "PYTHON_WORKER_FACTORY" in k]}
    with open(os.path.join(args["out"], f"node-{ctx.executor_id}.json"), "w") as f:
        json.dump(info, f)
    # With ps nodes shutdown() awaits the chief alone and then stops the others:
    # the chief waits until every node has reported.
    deadline = time.time() + 120
    while (ctx.job_name == "chief" and time.time() < deadline
           and len(os.listdir(args["out"])) < args.get("wait_for", 0)):
        time.sleep(0.1)


def fail_on_worker(args, ctx):
    if ctx.job_name == "worker":
        time.sleep(1)
        raise ValueError("boom")
    time.sleep(300)


def exit_on_worker(args, ctx):
    if ctx.job_name == "worker":
        time.sleep(1)
        os._exit(3)
    time.sleep(300)


def sleep_forever(args, ctx):
    with open(os.path.join(args["out"], f"pid-{ctx.executor_id}"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(3600)


def _synthetic(n=256, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], dtype="float32") + 0.25)[:, None]
    return x, y


def _save_weights(args, ctx, weights):
    with open(os.path.join(args["out"], f"weights-{ctx.executor_id}.json"), "w") as f:
        json.dump({"job": ctx.job_name, "weights": [w.tolist() for w in weights]}, f)


def mwms_keras_fit(args, ctx):
    """tf.keras (tf-keras 2.21 through TF_USE_LEGACY_KERAS) model.fit under MWMS."""
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = _synthetic()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat()
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    ds = ds.with_options(opts)
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
        model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss="mse")
    hist = model.fit(ds, epochs=3, steps_per_epoch=8, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    _save_weights(args, ctx, model.get_weights())


def mwms_keras3_custom_loop(args, ctx):
    """Keras 3 model trained by a custom loop (strategy.run + GradientTape) under MWMS."""
    import keras
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = _synthetic()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat()
    dist = iter(strategy.experimental_distribute_dataset(ds))
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        opt = keras.optimizers.SGD(0.05)

    @tf.function
    def step(it):
        def replica(batch):
            xb, yb = batch
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(xb, training=True) - yb))
                loss = loss / strategy.num_replicas_in_sync
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss
        return strategy.reduce("SUM", strategy.run(replica, args=(next(it),)), axis=None)

    losses = [float(step(dist)) for _ in range(20)]
    assert losses[-1] < losses[0], losses
    _save_weights(args, ctx, model.get_weights())


def ps_strategy(args, ctx):
    """ParameterServerStrategy: ps and workers serve, the chief coordinates tf-keras fit."""
    import tensorflow as tf
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if ctx.job_name in ("ps", "worker"):
        server = tf.distribute.Server(resolver.cluster_spec(), job_name=ctx.job_name,
                                      task_index=ctx.task_index, protocol="grpc", start=True)
        server.join()
        return
    strategy = tf.distribute.ParameterServerStrategy(resolver)
    x, y = _synthetic()

    def dataset_fn(input_context):
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat()

    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
        model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss="mse")
    data = tf.keras.utils.experimental.DatasetCreator(dataset_fn)
    hist = model.fit(data, epochs=3, steps_per_epoch=8, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    _save_weights(args, ctx, model.get_weights())


def checkpointed_fit(args, ctx):
    """MWMS tf-keras fit that checkpoints every epoch and resumes from the latest checkpoint.

    With ``args["kill_epoch"]`` the rank-1 worker SIGKILLs itself in that
    epoch (0-based) on the first attempt.  SPARK mode (``args["spark"]``) trains on
    the fed rows, TENSORFLOW mode on synthetic data.
    """
    import signal

    import tensorflow as tf

    import sparktf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = _synthetic(640)
    if args.get("spark"):
        ds = ctx.get_data_feed().dataset(32).map(lambda f, i: (f, tf.reduce_sum(f, 1, True)))
        steps = None
    else:
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat()
        steps = 20
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
        model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss="mse")
    if args.get("keras_backup"):  # Keras' own BackupAndRestore on a shared local directory
        manager, done = None, 0
        saving = tf.keras.callbacks.BackupAndRestore(args["model_dir"])
    else:
        ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        manager = sparktf.CheckpointManager(ckpt, args["model_dir"], ctx, max_to_keep=3)
        done = manager.restore_or_initialize()
        saving = manager.keras_callback()

    class Kill(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if not hasattr(self, "epoch"):
                name = f"start-{ctx.attempt}-{ctx.executor_id}.json"
                with open(os.path.join(args["out"], name), "w") as f:
                    json.dump({"attempt": ctx.attempt, "restored": done, "first_epoch": epoch}, f)
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if (self.epoch == args.get("kill_epoch") and batch == 3 and ctx.attempt == 0
                    and ctx.rank == 1):
                with open(os.path.join(args["out"], "killed"), "w") as f:
                    f.write(str(time.time()))
                os.kill(os.getpid(), signal.SIGKILL)

    hist = model.fit(ds.with_options(opts), epochs=args["epochs"], initial_epoch=done,
                     steps_per_epoch=steps, verbose=0, callbacks=[Kill(), saving])
    loss = float(model.evaluate(x, y, verbose=0))  # collective: every node evaluates
    if ctx.is_chief:
        with open(os.path.join(args["out"], f"final-{ctx.attempt}.json"), "w") as f:
            json.dump({"loss": loss, "epochs_run": len(hist.history["loss"]),
                       "latest": manager and manager.latest_checkpoint}, f)
