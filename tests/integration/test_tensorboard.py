"""A real TensorBoard beside the chief, and event files mirrored to a remote ``log_dir``.

The nodes write summaries to a local ``ctx.log_dir``, which TensorBoard reads;
with a remote ``log_dir`` (S3 on moto, WebHDFS on the test server)
:mod:`sparktf.node.logsync` mirrors it to the URL while they run and once more
when they end.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import urllib.request
import uuid

import pytest

import tbfuns
from conftest import sparktf_processes
from servers.fixtures import free_port
from sparktf import TFCluster, fs
from sparktf.node import logsync

pytestmark = [pytest.mark.integration, pytest.mark.hadoop]


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


def event_files(url: str) -> list[str]:
    try:
        return fs.glob(url + "/train/events.out.tfevents.*")
    except FileNotFoundError:
        return []


# ----------------------------------------------------------------------------- the mirror


@pytest.fixture
def uploads(monkeypatch):
    """The destinations of every ``fs.upload`` call, in order."""
    calls: list[str] = []
    real = fs.upload

    def upload(src, url):
        calls.append(url)
        real(src, url)

    monkeypatch.setattr(fs, "upload", upload)
    return calls


@pytest.mark.parametrize("client", ["namenode", "webhdfs"])
def test_mirror_uploads_new_and_changed_files_only(hadoop, client, tmp_path, uploads):
    """To a real NameNode, over hdfs:// (hdfs-native) and webhdfs://."""
    local = tmp_path / "logs"
    (local / "train").mkdir(parents=True)
    (local / "train" / "events.1").write_bytes(b"first")
    (local / "validation").mkdir()
    (local / "validation" / "events.2").write_bytes(b"second")
    (local / "workertemp_1").mkdir()  # a non-chief Keras worker's temporary copy: skipped
    (local / "workertemp_1" / "events.3").write_bytes(b"temporary")
    url = f"{getattr(hadoop, client)}/tmp/tb-{uuid.uuid4().hex[:8]}"
    mirror = logsync.Mirror(str(local), url)

    assert mirror.sync()
    assert uploads == [f"{url}/train/events.1", f"{url}/validation/events.2"]
    assert fs.open_input(f"{url}/train/events.1").read() == b"first"
    assert not fs.exists(f"{url}/workertemp_1")

    uploads.clear()
    assert mirror.sync() and uploads == []          # nothing changed: nothing uploaded

    with open(local / "train" / "events.1", "ab") as f:  # an event file grows
        f.write(b" and more")
    (local / "train" / "events.4").write_bytes(b"new")
    assert mirror.sync()
    assert uploads == [f"{url}/train/events.1", f"{url}/train/events.4"]
    assert fs.open_input(f"{url}/train/events.1").read() == b"first and more"


def test_failing_upload_warns_once_and_is_retried(tmp_path, caplog, uploads):
    local = tmp_path / "logs"
    local.mkdir()
    (local / "events.1").write_bytes(b"x")
    (local / "events.2").write_bytes(b"y")
    unreachable = f"webhdfs://127.0.0.1:{free_port()}/tb"   # nothing listens there
    mirror = logsync.Mirror(str(local), unreachable)
    with caplog.at_level(logging.DEBUG, logger="sparktf.node.logsync"):
        assert mirror.sync() is False                    # warns, does not raise
        assert mirror.sync() is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text               # once per run of failures
    assert unreachable in warnings[0].getMessage()
    assert "cannot reach the WebHDFS server" in warnings[0].getMessage()
    assert len(uploads) == 2                             # stopped at the first failure each time

    mirror.url = str(tmp_path / "remote")                # the store is back
    uploads.clear()
    with caplog.at_level(logging.INFO, logger="sparktf.node.logsync"):
        assert mirror.sync()
    assert len(uploads) == 2 and "works again" in caplog.text
    assert sorted(os.listdir(tmp_path / "remote")) == ["events.1", "events.2"]


def test_sync_process_mirrors_periodically_and_on_finish(tmp_path):
    local, remote = tmp_path / "logs", tmp_path / "remote"
    local.mkdir()
    (local / "events.1").write_bytes(b"early")
    env = dict(os.environ, **{logsync.INTERVAL_ENV: "0.2", logsync.TIMEOUT_ENV: "10"})
    with open(tmp_path / "node.log", "ab") as log:
        proc, timeout = logsync.start(str(local), str(remote), env, log)
    assert timeout == 10
    try:
        deadline = time.monotonic() + 30
        while not (remote / "events.1").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (remote / "events.1").read_bytes() == b"early"   # a periodic pass
        (local / "events.1").write_bytes(b"late and longer")
        (local / "events.2").write_bytes(b"last")
    finally:
        code = logsync.finish(proc, timeout, str(remote))
    assert code == logsync.OK, (tmp_path / "node.log").read_text()
    assert (remote / "events.1").read_bytes() == b"late and longer"  # the last pass
    assert (remote / "events.2").read_bytes() == b"last"


def test_last_pass_to_a_hung_store_is_bounded(tmp_path):
    local = tmp_path / "logs"
    local.mkdir()
    (local / "events.1").write_bytes(b"x")
    with socket.socket() as hung:        # accepts connections (backlog), never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"webhdfs://127.0.0.1:{hung.getsockname()[1]}/tb"
        env = dict(os.environ, **{logsync.INTERVAL_ENV: "60", logsync.TIMEOUT_ENV: "1"})
        with open(tmp_path / "node.log", "ab") as log:
            proc, timeout = logsync.start(str(local), url, env, log)
        started = time.monotonic()
        code = logsync.finish(proc, timeout, url)
        took = time.monotonic() - started
    text = (tmp_path / "node.log").read_text()
    assert code == logsync.TIMED_OUT, text
    assert took < 5, took
    assert f"to {url} did not finish within 1 s" in text


def test_node_url_chief_at_the_root_others_below():
    spec = {"chief": ["h:1"], "worker": ["h:2", "h:3"], "ps": ["h:4"]}
    assert logsync.node_url("s3://b/run", "chief", 0, spec) == "s3://b/run"
    assert logsync.node_url("s3://b/run/", "worker", 1, spec) == "s3://b/run/worker-1"
    assert logsync.node_url("s3://b/run", "ps", 0, spec) == "s3://b/run/ps-0"
    assert logsync.node_url("s3://b/run", "worker", 0, {"worker": ["h:2"]}) == "s3://b/run"
    assert logsync.is_remote("s3://b/x") and logsync.is_remote("webhdfs://h:1/x")
    assert not logsync.is_remote("/tmp/x") and not logsync.is_remote(None)


# ----------------------------------------------------------------------------- a real cluster


def test_tensorboard_serves_the_run_and_its_event_files_reach_s3(sc, s3_server, tmp_path,
                                                                 no_leftovers, caplog):
    from pyspark import cloudpickle
    cloudpickle.register_pickle_by_value(tbfuns)
    url = f"{s3_server['url']}/tb-{uuid.uuid4().hex[:8]}"
    with socket.socket() as s:  # a free port for TENSORBOARD_PORT, which run(env=) passes on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**s3_server["env"], logsync.INTERVAL_ENV: "1", "TENSORBOARD_PORT": str(port)}
    cluster = TFCluster.run(sc, tbfuns.fit_and_record, {"out": str(tmp_path)}, 2,
                            master_node="chief", tensorboard=True, log_dir=url, env=env,
                            reservation_timeout=120, keep_node_dirs=True)
    tb = cluster.tensorboard_url()
    try:
        assert tb == f"http://127.0.0.1:{port}"
        assert f"TensorBoard for cluster {cluster.cluster_id}: {tb}" in caplog.text
        assert [p for p in sparktf_processes() if "tensorboard.main" in p[1]]
        assert get(tb)[0] == 200
        deadline, tags, mirrored = time.monotonic() + 120, {}, []
        while time.monotonic() < deadline:
            tags = json.loads(get(tb + "/data/plugin/scalars/tags")[1])
            mirrored = event_files(url)
            if any("epoch_loss" in t for t in tags.values()) and mirrored:
                break
            time.sleep(0.5)
        assert any("epoch_loss" in t for t in tags.values()), tags  # TensorBoard reads locally
        assert mirrored, fs.listdir(s3_server["url"])        # uploaded while running
    finally:
        (tmp_path / "stop").touch()
        cluster.shutdown(timeout=120)
    with pytest.raises(OSError):  # TensorBoard stopped with its node
        get(tb)

    chief = json.loads((tmp_path / "ctx-chief-0.json").read_text())
    worker = json.loads((tmp_path / "ctx-worker-0.json").read_text())
    assert chief["log_url"] == url and worker["log_url"] == f"{url}/worker-0"
    assert "://" not in chief["log_dir"] and chief["log_dir"].endswith("/tensorboard")
    assert chief["log_dir"] != worker["log_dir"]

    for node in (chief, worker):  # after the last pass the remote copy is the local file
        local = sorted(os.listdir(os.path.join(node["log_dir"], "train")))
        remote = event_files(node["log_url"])
        assert [u.rsplit("/", 1)[1] for u in remote] == local, (remote, local)
        for name, remote_url in zip(local, remote):
            assert fs.size(remote_url) == os.path.getsize(
                os.path.join(node["log_dir"], "train", name)) > 0
    data = fs.open_input(event_files(url)[0]).read()
    assert len(data) > 0 and b"epoch_loss" in data
    for node in (chief, worker):  # kept for this test (keep_node_dirs=True)
        shutil.rmtree(os.path.dirname(node["log_dir"]))
