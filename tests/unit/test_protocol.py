"""Typed control messages and the node spec: decoding refuses what does not fit."""

import os
import stat

import pytest

from sparktf import protocol as p
from sparktf.errors import ProtocolError


@pytest.mark.parametrize("msg", [
    p.Started(pid=1, host="h", executor="0", log="/l", cluster_spec={"worker": ["h:1"]}),
    p.Exited(code=None), p.Exited(code=-9, stopped=True, reason="r", error="E: x"),
    p.Ready(pid=3), p.Ready(pid=3, feed=["h", 5]), p.Finished(), p.Terminated(),
    p.Stop("why"), p.LogsRequest(20), p.LogsReply("text"), p.TensorBoardUp("http://h:1"),
    p.EpochEnd(epoch=2, counts={"1": 10}), p.EndFeed(), p.EpochDone(epoch=4),
])
def test_every_message_survives_a_round_trip(msg):
    assert p.decode(msg.to_dict()) == msg


@pytest.mark.parametrize("raw, complaint", [
    ([], "must be an object"),
    ({"type": "nope"}, "unknown control message type"),
    ({"type": "ready"}, "lacks field 'pid'"),
    ({"type": "ready", "pid": True}, "field 'pid' has the wrong type (bool)"),
    ({"type": "ready", "pid": "7"}, "field 'pid' has the wrong type (str)"),
    ({"type": "exit", "code": 1.5}, "field 'code' has the wrong type"),
    ({"type": "epoch_end", "epoch": 1, "counts": [1]}, "field 'counts'"),
    ({"type": "stop", "reason": None}, "field 'reason'"),
])
def test_malformed_messages_are_refused(raw, complaint):
    with pytest.raises(ProtocolError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        p.decode(raw)


def test_node_spec_round_trip_is_private(tmp_path):
    spec = p.NodeSpec(
        node=1, job="worker", index=0, host="h", tf_port=5, executor="2",
        cluster_spec={"worker": ["h:5"]}, tf_config="{}", num_workers=1, input_mode=1,
        release_port=True, control=("h", 6), secret="ab" * 16, env={}, default_fs="file:///",
        working_dir="/w", node_dir=str(tmp_path), detach=True, attempt=0, tensorboard=False,
        log_dir="/l", log_url=None)
    path = str(tmp_path / "spec.json")
    spec.write(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert p.NodeSpec.load(path) == spec
    assert spec.name == "worker:0" and spec.log_path == str(tmp_path / "node.log")


def test_input_mode_keeps_tfos_values():
    assert p.InputMode.TENSORFLOW == 0 and p.InputMode.SPARK == 1


def test_the_secret_is_not_in_a_repr():
    plan = p.LaunchPlan(cluster_id="c", attempt=0, roles=[("worker", 0)], input_mode=0,
                        control=("h", 1), secret="5ec7e7" * 8, env={}, base_dir=None,
                        default_fs="file:///", working_dir="/w", release_port=True,
                        tensorboard=None, log_dir=None)
    assert "5ec7e7" not in repr(plan)
