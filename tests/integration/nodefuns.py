"""map_fun bodies used by the integration tests (pickled by value to the executors)."""

import json
import os
import time


def report(args, ctx):
    """Write what the node saw to args['out']/node-<executor_id>.json."""
    info = {"executor_id": ctx.executor_id, "worker_num": ctx.worker_num,
            "job_name": ctx.job_name, "task_index": ctx.task_index,
            "cluster_spec": ctx.cluster_spec, "num_workers": ctx.num_workers,
            "tf_config": json.loads(os.environ["TF_CONFIG"]), "defaultFS": ctx.defaultFS,
            "working_dir": ctx.working_dir, "abs": ctx.absolute_path("x/y"),
            "legacy": os.environ.get("TF_USE_LEGACY_KERAS"), "pid": os.getpid(),
            "secret_env": [k for k in os.environ if "SECRET" in k]}
    with open(os.path.join(args["out"], f"node-{ctx.executor_id}.json"), "w") as f:
        json.dump(info, f)


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
