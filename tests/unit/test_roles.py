import json

import pytest

from sparktf import roles
from sparktf.errors import ConfigError
from sparktf.roles import Role


def test_tfos_role_order():
    r = roles.assign_roles(5, num_ps=2, master_node="chief", eval_node=True)
    assert r == [Role("ps", 0), Role("ps", 1), Role("chief", 0), Role("evaluator", 0),
                 Role("worker", 0)]
    assert roles.num_workers(r) == 2
    assert roles.data_nodes(r) == [2, 4]


def test_worker_only_cluster_and_tf_config():
    r = roles.assign_roles(2)
    spec = roles.cluster_spec(r, ["h:1", "h:2"])
    assert spec == {"worker": ["h:1", "h:2"]}
    conf = json.loads(roles.tf_config(spec, r[1]))
    assert conf == {"cluster": spec, "task": {"type": "worker", "index": 1},
                    "environment": "cloud"}


def test_cluster_spec_keeps_task_order_and_leaves_out_evaluator():
    r = roles.assign_roles(4, num_ps=1, master_node="chief", eval_node=True)
    spec = roles.cluster_spec(r, ["a:1", "b:2", "c:3", "d:4"])
    assert spec == {"ps": ["a:1"], "chief": ["b:2"], "worker": ["d:4"]}


@pytest.mark.parametrize("args", [(0,), (2, 2), (1, 0, "boss"), (2, 1, None, True), (1, -1)])
def test_impossible_layouts_are_rejected(args):
    with pytest.raises(ConfigError):
        roles.assign_roles(*args)
