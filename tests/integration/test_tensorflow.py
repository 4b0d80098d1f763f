"""TENSORFLOW mode with real TensorFlow: MWMS (tf-keras fit, Keras 3 loop) and PS strategy."""

import glob
import json
import os

import numpy as np
import pytest

import nodefuns
from sparktf import TFCluster

pytestmark = pytest.mark.integration


def weights(out):
    return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "weights-*.json")))]


def assert_identical(results, count):
    assert len(results) == count
    first = [np.array(w) for w in results[0]["weights"]]
    for r in results[1:]:
        for a, b in zip(first, r["weights"]):
            np.testing.assert_array_equal(a, np.array(b))


def test_mwms_tf_keras_fit_twice_in_one_spark_context(sc, tmp_path, no_leftovers):
    # Two clusters one after the other: each node is a fresh process, so
    # "Collective ops are already configured" cannot happen.
    for run in ("a", "b"):
        out = tmp_path / run
        out.mkdir()
        cluster = TFCluster.run(sc, nodefuns.mwms_keras_fit, {"out": str(out)}, 2,
                                master_node="chief", reservation_timeout=120)
        cluster.shutdown(timeout=300)
        assert_identical(weights(out), 2)


def test_mwms_keras3_custom_loop(sc, tmp_path, no_leftovers):
    cluster = TFCluster.run(sc, nodefuns.mwms_keras3_custom_loop, {"out": str(tmp_path)}, 2,
                            master_node="chief", reservation_timeout=120, legacy_keras=False)
    cluster.shutdown(timeout=300)
    assert_identical(weights(tmp_path), 2)


def test_parameter_server_strategy_and_ps_stopped_at_shutdown(sc, tmp_path, no_leftovers):
    cluster = TFCluster.run(sc, nodefuns.ps_strategy, {"out": str(tmp_path)}, 3, num_ps=1,
                            master_node="chief", reservation_timeout=120)
    cluster.shutdown(timeout=300)
    results = weights(tmp_path)
    assert [r["job"] for r in results] == ["chief"]
    states = {n.role.name: n.state for n in cluster.nodes}
    assert states == {"ps:0": "stopped", "chief:0": "finished", "worker:0": "stopped"}


def test_driver_ps_nodes_run_ps_on_the_driver(sc, tmp_path, no_leftovers):
    cluster = TFCluster.run(sc, nodefuns.ps_strategy, {"out": str(tmp_path)}, 3, num_ps=1,
                            master_node="chief", driver_ps_nodes=True, reservation_timeout=120)
    ps = cluster.nodes[0]
    assert ps.role.name == "ps:0" and ps.state == "running"
    assert os.path.exists(ps.log), "the ps node's files live on the driver"
    cluster.shutdown(timeout=300)
    assert [r["job"] for r in weights(tmp_path)] == ["chief"]
    assert cluster.nodes[0].state == "stopped"
