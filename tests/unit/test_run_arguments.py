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
    with pytest.raises(AttributeError):
        TFCluster.run(None, lambda args, ctx: None, None, 2, queues=queues)
