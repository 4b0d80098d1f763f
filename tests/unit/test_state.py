"""The driver's node state machine: tables of event sequences, no Spark, no sockets."""

import pytest

from sparktf import protocol as p
from sparktf.driver.state import (NodeState, NodeStatus, exit_description, not_started,
                                  transition)
from sparktf.errors import NodeError
from sparktf.roles import Role

STARTED = p.Started(pid=7, host="10.0.0.5", executor="3", log="/x/node.log", cluster_spec={})
READY = p.Ready(pid=8, feed=["10.0.0.5", 4000])


def run(events, stopping=False):
    """Apply events in order; return the final state and every outcome."""
    state = NodeState(1, Role("worker", 0))
    outcomes = []
    for t, event in enumerate(events):
        out = transition(state, event, stopping=stopping, now=float(t))
        outcomes.append(out)
        state = out.state
    return state, outcomes


@pytest.mark.parametrize("events, status, failure", [
    ([], NodeStatus.PENDING, None),
    ([STARTED], NodeStatus.STARTED, None),
    ([STARTED, READY], NodeStatus.RUNNING, None),
    ([STARTED, READY, p.Finished(), p.Exited(code=0)], NodeStatus.FINISHED, None),
    # The exit report can beat the node's own "finished" (two connections).
    ([STARTED, READY, p.Exited(code=0), p.Finished()], NodeStatus.FINISHED, None),
    ([STARTED, READY, p.Exited(code=1, error="ValueError: boom", traceback="Traceback...")],
     NodeStatus.FAILED, "failed: ValueError: boom"),
    ([STARTED, READY, p.Exited(code=3)], NodeStatus.FAILED, "process exited with code 3"),
    ([STARTED, READY, p.Exited(code=-9)], NodeStatus.FAILED, "process killed by signal 9"),
    ([STARTED, READY, p.Exited(code=None)], NodeStatus.FAILED,
     "process ended without an exit status"),
    # map_fun finished, then the process was killed on the way out: still finished.
    ([STARTED, READY, p.Finished(), p.Exited(code=-9)], NodeStatus.FINISHED, None),
    ([STARTED, READY, p.Disconnected("supervisor")], NodeStatus.LOST,
     "lost contact with the node's supervisor"),
    ([STARTED, READY, p.Disconnected("node"), p.Silent()], NodeStatus.LOST,
     "went away without a report"),
    # The exit report arrives within the grace period: the silence check finds it ended.
    ([STARTED, READY, p.Disconnected("node"), p.Exited(code=-9), p.Silent()],
     NodeStatus.FAILED, "killed by signal 9"),
    # A second registration (a barrier stage Spark retried) does not reset the node.
    ([STARTED, READY, p.Started(pid=99, host="h2", executor="9", log="", cluster_spec={})],
     NodeStatus.RUNNING, None),
    # Messages after the end change nothing.
    ([STARTED, READY, p.Exited(code=0), READY, p.Disconnected("supervisor")],
     NodeStatus.FINISHED, None),
])
def test_event_sequences(events, status, failure):
    state, outcomes = run(events)
    assert state.status == status
    failures = [o.failure for o in outcomes if o.failure is not None]
    if failure is None:
        assert failures == []
    else:
        assert len(failures) == 1 and isinstance(failures[0], NodeError)
        assert failure in str(failures[0]).splitlines()[0]
        assert failures[0].node == "worker:0"


@pytest.mark.parametrize("stopping, status", [(True, NodeStatus.STOPPED),
                                               (False, NodeStatus.FAILED)])
def test_a_stopped_node_fails_only_if_nobody_asked(stopping, status):
    state, outcomes = run([STARTED, READY, p.Exited(code=-15, stopped=True,
                                                    reason="owner process 5 exited")], stopping)
    assert state.status == status
    if status == NodeStatus.FAILED:
        assert "(owner process 5 exited)" in str(outcomes[-1].failure)


def test_the_headline_names_node_then_exception_and_detail_has_traceback_and_log():
    _, outcomes = run([STARTED, READY, p.Exited(code=1, error="ValueError: boom",
                                                 traceback="Traceback (most recent call last)",
                                                 log_tail="line a\nline b")])
    text = str(outcomes[-1].failure)
    assert text.splitlines()[0] == ("TF node worker:0 (node 1, executor 3, host 10.0.0.5) "
                                    "failed: ValueError: boom")
    assert "Traceback (most recent call last)" in text
    assert "last lines of the node's log:\nline a\nline b" in text


def test_silence_is_checked_once_the_node_connection_drops():
    _, outcomes = run([STARTED, READY, p.Disconnected("node")])
    assert outcomes[-1].check_silence and outcomes[-1].failure is None


def test_states_record_where_and_when():
    state, _ = run([STARTED, READY])
    assert (state.host, state.executor, state.pid, state.feed, state.since) == (
        "10.0.0.5", "3", 7, ("10.0.0.5", 4000), 1.0)
    assert state.state == "running" and not state.done


@pytest.mark.parametrize("code, text", [(None, "process ended without an exit status"),
                                        (0, "process exited with code 0"),
                                        (-6, "process killed by signal 6")])
def test_exit_description(code, text):
    assert exit_description(code) == text


def node(i, status):
    return NodeState(i, Role("worker", i), status=status)


@pytest.mark.parametrize("statuses, tb, url, waiting", [
    (["running", "running"], None, None, []),
    (["running", "started"], None, None, [1]),
    (["pending", "running"], 0, "http://h:1", [0]),
    (["running", "running"], 0, None, [0]),          # its TensorBoard has not come up yet
    (["running", "running"], 0, "http://h:1", []),
    (["finished", "running"], 0, None, []),          # ended first: TensorBoard will not come
    (["failed", "running"], 0, None, []),
])
def test_what_run_still_waits_for(statuses, tb, url, waiting):
    nodes = [node(i, NodeStatus(s)) for i, s in enumerate(statuses)]
    assert [n.node for n in not_started(nodes, tb, url)] == waiting
