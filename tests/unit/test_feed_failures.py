"""What a feeding task tells the driver when it fails, and its refusal of Spark's retries."""

from __future__ import annotations

import pytest

from sparktf.errors import FeedError, FeedTimeout
from sparktf.feed import sender
from sparktf.protocol import decode


def user_parse(line):
    return float(line)


def failing_lineage():
    yield user_parse("1.5")
    yield user_parse("not a number")


def lost():
    error = FeedError("TF node worker:1 closed the feed while partition 3 was fed")
    error.node_lost = True
    return error


@pytest.mark.parametrize("error,cls,node_lost,texts", [
    (FeedTimeout("TF node worker:0 is alive but took no data for 2s"), "FeedTimeout", False,
     ["took no data for 2s"]),
    (FeedError("bad input in partition 3, row 7: the row is None"), "FeedError", False,
     ["partition 3, row 7"]),
    (lost(), "FeedError", True, ["closed the feed"]),
    (None, "FeedError", False,   # the user's code in the fed RDD's lineage
     ["partition 3: ValueError: could not convert string to float: 'not a number'",
      "in user_parse", "return float(line)"]),
])
def test_a_failure_names_its_cause(error, cls, node_lost, texts):
    if error is None:
        with pytest.raises(ValueError) as info:
            list(failing_lineage())
        error = info.value
    failure = sender._failure("job-7", 3, error)
    assert (failure.job, failure.error_class, failure.node_lost) == ("job-7", cls, node_lost)
    for text in texts:
        assert text in failure.error, failure.error
    assert decode(failure.to_dict()) == failure   # it crosses the wire as it is


def test_a_retried_feeding_task_fails_at_once(monkeypatch):
    """Spark's retry of a feeding task would feed rows the nodes may hold already, and
    wait feed_timeout again: it fails before it connects to anything."""
    monkeypatch.setattr(sender, "_task_attempt", lambda: 1)
    nodes = [{"node": 0, "name": "worker:0", "feed": ["127.0.0.1", 1], "control": None}]
    with pytest.raises(FeedError, match=r"partition 5: Spark retried its feeding task "
                                        r"\(attempt 2\)"):
        sender.feed_train(5, iter([]), nodes, b"secret", epoch=0, partitions=8,
                          feed_timeout=600, arrow=False, job="job-1")


def test_outside_spark_a_task_is_a_first_attempt():
    assert sender._task_attempt() == 0


def test_a_retried_inference_task_raises_its_first_error_or_runs_again(monkeypatch):
    """Spark's retry of an inference task asks the driver for the first attempt's error and
    raises it at once; with none reported (its Python worker died) it runs again, and its
    own failure is reported under the inference key."""
    from sparktf.control import ControlServer, report_feed_failure
    from sparktf.protocol import FeedFailed
    from sparktf.wire import new_secret

    secret = new_secret()
    server = ControlServer("127.0.0.1", secret, num_nodes=1)
    try:
        monkeypatch.setattr(sender, "_task_attempt", lambda: 1)
        report_feed_failure(server.address, secret, None, FeedFailed(
            "infer-3/0/5", "FeedTimeout", "TF node worker:0 is alive but took no data for 2s"))
        node = {"node": 0, "name": "worker:0", "feed": ["127.0.0.1", 1],
                "control": list(server.address)}
        with pytest.raises(FeedTimeout, match=r"took no data for 2s \(Spark's retry 1 of this "
                                              r"inference task raises its first attempt"):
            list(sender.feed_inference(5, iter([]), node, secret, 600, arrow=False,
                                       job="infer-3"))
        assert server.feed_failure("infer-3").job == "infer-3/0/5"
        with pytest.raises(FeedError) as info:   # partition 6: nothing reported, runs again
            list(sender.feed_inference(6, iter([]), node, secret, 600, arrow=False,
                                       job="infer-3"))
        again = server.feed_failure("infer-3/0/6")   # its own failure, reported
        assert again.error == str(info.value), again
        assert server.feed_failure("infer-3").job == "infer-3/0/5"   # the stage's first
        assert server.feed_failure("infer-") is None   # a key, not any prefix
    finally:
        server.close()
