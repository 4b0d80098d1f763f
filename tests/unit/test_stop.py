"""The out-of-process stop command: a private stop file, an authenticated request,
rejection of a wrong token (logged, no stop), and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from sparktf import stop
from sparktf.errors import ConfigError, SparkTFError


@pytest.fixture
def server(tmp_path):
    got, event = [], threading.Event()

    def on_stop(why):
        got.append(why)
        event.set()

    srv = stop.StopServer("127.0.0.1", str(tmp_path / "stop"), "x.stop", on_stop)
    yield srv, got, event
    srv.close()


def test_stop_file_is_private_and_a_request_stops(server, tmp_path):
    srv, got, event = server
    assert os.stat(srv.path).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "stop").st_mode & 0o777 == 0o700
    assert "stopping" in stop.send_stop(srv.path, reason="maintenance")
    assert event.wait(5) and "maintenance" in got[0]
    srv.close()
    assert not os.path.exists(srv.path)
    with pytest.raises(ConfigError, match="no stop file"):
        stop.send_stop(srv.path)


def test_a_wrong_token_is_rejected_and_logged(server, tmp_path, caplog):
    srv, got, _ = server
    info = json.load(open(srv.path))
    bad = tmp_path / "bad.stop"
    bad.write_text(json.dumps({**info, "token": "ab" * 32}))
    bad.chmod(0o600)
    with pytest.raises(SparkTFError, match="refused"):
        stop.send_stop(str(bad))
    assert not got
    assert "rejected a stop request" in caplog.text and "failed authentication" in caplog.text
    assert info["token"] not in caplog.text and "ab" * 32 not in caplog.text
    # The server still takes a genuine request afterwards.
    stop.send_stop(srv.path)
    assert len(got) == 1


def test_a_stop_file_others_can_read_or_a_missing_token_is_refused(server, tmp_path):
    srv, got, _ = server
    info = json.load(open(srv.path))
    loose = tmp_path / "loose.stop"
    loose.write_text(json.dumps(info))
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match="must be 0600"):
        stop.send_stop(str(loose))
    no_token = tmp_path / "none.stop"
    no_token.write_text(json.dumps({k: v for k, v in info.items() if k != "token"}))
    no_token.chmod(0o600)
    with pytest.raises(ConfigError, match="lacks host, port or token"):
        stop.send_stop(str(no_token))
    assert not got


def test_an_existing_stop_file_is_not_overwritten(tmp_path):
    (tmp_path / "d").mkdir(mode=0o700)
    (tmp_path / "d" / "x.stop").write_text("{}")
    with pytest.raises(FileExistsError):
        stop.StopServer("127.0.0.1", str(tmp_path / "d"), "x.stop", lambda why: None)


def test_command_line(server, tmp_path):
    srv, got, event = server
    cli = [sys.executable, "-m", "sparktf", "stop"]
    ok = subprocess.run(cli + [srv.path], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "stopping" in ok.stdout
    assert event.wait(5)
    missing = subprocess.run(cli + [str(tmp_path / "nope")], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 1 and "no stop file" in missing.stderr
    assert subprocess.run(cli, capture_output=True, timeout=60).returncode == 2
