"""TFCluster.run refuses arguments that cannot work before it touches Spark."""

import pytest

from sparktf import TFCluster
from sparktf.errors import ConfigError


@pytest.mark.parametrize("kwargs, complaint", [
    ({"input_mode": 2}, "input_mode must be"),
    ({"driver_ps_nodes": True, "num_ps": 1, "input_mode": TFCluster.InputMode.SPARK},
     "works only with InputMode.TENSORFLOW"),
    ({"driver_ps_nodes": True}, "needs num_ps >= 1"),
    ({"max_restarts": -1}, "max_restarts must be an integer >= 0"),
    ({"max_restarts": True}, "max_restarts must be an integer >= 0"),
    ({"queues": ("input", "output", "feature")}, "leave queues at its default"),
    ({"queues": "input"}, "leave queues at its default"),
])
def test_bad_run_arguments(kwargs, complaint):
    with pytest.raises(ConfigError, match=complaint):
        TFCluster.run(None, lambda args, ctx: None, None, 2, **kwargs)


@pytest.mark.parametrize("queues", [("input", "output", "error"), ["input", "output"],
                                    ("input",)])
def test_tfos_queue_names_are_accepted(queues):
    # Past the argument checks, run() needs a SparkContext: None fails there, not on queues.
    with pytest.raises(ConfigError, match="needs a SparkContext or a SparkSession, got NoneType"):
        TFCluster.run(None, lambda args, ctx: None, None, 2, queues=queues)


@pytest.mark.parametrize("settings, slots", [
    ({"spark.master": "local"}, 1),
    ({"spark.master": "local[4]"}, 4),
    ({"spark.master": "local[4]", "spark.task.cpus": "2"}, 2),
    ({"spark.master": "local[*]"}, None),
    ({"spark.master": "local-cluster[3,2,1024]"}, 6),
    ({"spark.master": "local-cluster[3, 1, 1024]", "spark.task.cpus": "1"}, 3),
    ({"spark.master": "yarn", "spark.executor.instances": "4", "spark.executor.cores": "2"}, 8),
    ({"spark.master": "k8s://h", "spark.executor.instances": "4", "spark.executor.cores": "4",
      "spark.task.cpus": "2"}, 8),
    ({"spark.master": "spark://h:7077", "spark.cores.max": "6"}, 6),
    ({"spark.master": "spark://h:7077"}, None),
    ({"spark.master": "yarn", "spark.executor.instances": "4", "spark.executor.cores": "2",
      "spark.dynamicAllocation.enabled": "true"}, None),
])
def test_task_slots_from_the_settings(settings, slots):
    """What a Spark Connect client can tell of the cluster's slots (it has no scheduler)."""
    from sparktf.driver.sparkjobs import configured_slots
    assert configured_slots(settings.get) == slots


def test_the_slot_message_names_what_yarn_must_allow():
    from sparktf.driver.sparkjobs import Spark

    class Settings(Spark):
        def conf(self, key, default=None):
            return {"spark.master": "yarn", "spark.executor.memory": "4g"}.get(key, default)

    text = Settings().slots_message(4, 2, 30)
    assert "needs 4 task slots" in text and "only 2" in text
    for name in ("spark.executor.memory=4g", "yarn.scheduler.maximum-allocation-mb",
                 "yarn.nodemanager.resource.memory-mb", "yarn.nodemanager.resource.cpu-vcores",
                 "spark.yarn.queue=default", "yarn.scheduler.capacity.root.default.capacity",
                 "ResourceManager UI"):
        assert name in text


class _Data:
    """An RDD or DataFrame as far as ``Spark.is_cached`` looks at it."""

    def __init__(self, cached):
        self._cached = cached

    @property
    def is_cached(self):
        if isinstance(self._cached, Exception):
            raise self._cached  # a Connect server that cannot answer
        return self._cached


@pytest.mark.parametrize("data, cached", [
    (_Data(True), True),
    (_Data(False), False),
    (_Data(RuntimeError("connection refused")), False),
    (object(), False),  # nothing that says it is cached
])
def test_whether_the_fed_data_is_cached(data, cached):
    """What split="auto" asks before it routes cached data by segments."""
    from sparktf.driver.sparkjobs import Spark
    assert Spark().is_cached(data) is cached
