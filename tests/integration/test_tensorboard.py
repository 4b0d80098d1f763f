"""A real TensorBoard server on the chief's executor, its URL on the driver."""

import json
import time
import urllib.request

import pytest

import nodefuns
from conftest import sparktf_processes
from sparktf import TFCluster

pytestmark = pytest.mark.integration


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


def test_tensorboard_serves_the_runs_loss_and_stops_at_shutdown(sc, tmp_path, no_leftovers,
                                                                caplog):
    cluster = TFCluster.run(sc, nodefuns.train_with_tensorboard, {"out": str(tmp_path)}, 2,
                            master_node="chief", tensorboard=True, reservation_timeout=120)
    url = cluster.tensorboard_url()
    try:
        assert url and url.startswith("http://127.0.0.1:")
        assert f"TensorBoard for cluster {cluster.cluster_id}: {url}" in caplog.text
        assert get(url)[0] == 200
        deadline, tags = time.monotonic() + 120, {}
        while time.monotonic() < deadline:
            tags = json.loads(get(url + "/data/plugin/scalars/tags")[1])
            if any("epoch_loss" in t for t in tags.values()):
                break
            time.sleep(1)
        assert any("epoch_loss" in t for t in tags.values()), tags
        assert [p for p in sparktf_processes() if "tensorboard.main" in p[1]]
    finally:
        (tmp_path / "stop").touch()
        cluster.shutdown(timeout=120)
    time.sleep(1)
    with pytest.raises(OSError):
        get(url)
