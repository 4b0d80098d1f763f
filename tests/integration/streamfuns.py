"""map_fun bodies for the streaming tests (pickled by value to the executors)."""

import json
import os
import time


def _save(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def train_batches(args, ctx):
    """Train micro-batch by micro-batch, with the replay-skip pattern.

    The node's "checkpoint" (``ckpt-<rank>.json``: the ids it trained on and
    the last micro-batch id) is written after every micro-batch; a micro-batch
    whose id is not newer than the checkpoint's is a replay and is skipped.
    ``fail_after`` rows into attempt 0, node 0 raises (restart tests); a row with a
    negative id makes any attempt raise (and write the time to ``poisoned``).
    """
    feed = ctx.get_data_feed()
    path = os.path.join(args["out"], f"ckpt-{ctx.rank}.json")
    state = {"last": -1, "ids": [], "batches": [], "skipped": []}
    if os.path.exists(path):
        with open(path) as f:
            state = json.load(f)
    state.setdefault("attempts", []).append(ctx.attempt)
    rows = 0
    while (batch_id := feed.next_batch_id()) is not None:
        if batch_id <= state["last"]:
            state["skipped"].append([batch_id, feed.skip_batch()])
            _save(path, state)
            continue
        ids = []
        while batch := feed.next_batch(args.get("batch_size", 50)):
            ids += [int(r["id"] if isinstance(r, dict) else r[1]) for r in batch]
            if min(ids) < 0:  # a poisoned row: fail, in any attempt
                _save(os.path.join(args["out"], "poisoned"), time.time())
                raise ValueError("boom mid-stream: a poisoned row")
            rows += len(batch)
            if (args.get("fail_after") and ctx.attempt == 0 and ctx.rank == 0
                    and rows >= args["fail_after"]):
                # fail_delay: fail after the feed job has ended (its rows are buffered)
                time.sleep(args.get("fail_delay", 0))
                raise ValueError("boom mid-stream")
        state["ids"] += ids  # "train" on the micro-batch, then checkpoint with its id
        state["batches"].append([batch_id, len(ids)])
        state["last"] = batch_id
        _save(path, state)


def infer_lines(args, ctx):
    """Inference on text lines ``key,value``: the result is ``key=2*value``.

    With ``marker``, the first batch writes a file there and waits ``delay``
    s before answering (a micro-batch in flight for the SIGTERM test).  In
    attempt 0, a batch holding the key ``fail_on`` makes the node raise (the
    restart test); a key ``poison`` makes any attempt raise, after writing the
    time to ``poisoned``.
    """
    feed = ctx.get_data_feed(train_mode=False)
    marker = args.get("marker")
    fail_on = args.get("fail_on") if ctx.attempt == 0 else None
    while not feed.should_stop():
        batch = feed.next_batch(50)
        if not batch:
            break
        keys = {r.split(",")[0] for r in batch}
        if fail_on in keys:
            raise ValueError(f"boom in inference at {fail_on}")
        if args.get("poison") in keys:
            _save(os.path.join(args["out"], "poisoned"), time.time())
            raise ValueError("boom in inference: a poisoned line")
        if marker:  # once: the test signals the driver while this batch is in flight
            with open(os.path.join(marker, f"busy-{ctx.executor_id}"), "w"):
                pass
            time.sleep(args.get("delay", 0))
            marker = None
        feed.batch_results([f"{r.split(',')[0]}={2 * int(r.split(',')[1])}" for r in batch])


def count_and_stop(args, ctx):
    """Read ``stop_after`` rows, then call terminate(): the stream stops by itself."""
    feed = ctx.get_data_feed()
    rows = 0
    while rows < args["stop_after"]:
        batch = feed.next_batch(10)
        if not batch:
            break
        rows += len(batch)
    feed.terminate()


def predict_ids(args, ctx):
    """Inference on rows with an ``id``: the prediction is ``3 * id + 1``.

    The first time a node sees an id of ``stall`` it writes the marker file
    ``stalled-<id>`` in ``markers`` and stalls for ``delay`` s, a micro-batch
    in flight while the test kills the driver; the marker makes a replay of
    that micro-batch (after the restart) go through.
    """
    import pyarrow as pa
    feed = ctx.get_data_feed(train_mode=False)
    stall = set(args.get("stall", ()))
    while not feed.should_stop():
        batch = feed.next_batch(64)
        if not batch:
            break
        ids = [int(r["id"]) for r in batch]
        for i in stall.intersection(ids):
            marker = os.path.join(args["markers"], f"stalled-{i}")
            if not os.path.exists(marker):
                with open(marker, "w"):
                    pass
                time.sleep(args["delay"])
        feed.batch_results(pa.RecordBatch.from_pydict({"pred": [3 * i + 1 for i in ids]}))
