"""Spark's own encryption settings turn sparktf's TLS on: ``encrypted_feed.py`` run in a pytest
process of its own, whose SparkContext (``tests/conftest.py``'s ``sc``, given extra settings
through ``SPARKTF_TEST_SPARK_CONF``) authenticates and encrypts Spark's RPC.  A SparkContext is
one per process, and the rest of the suite shares one without encryption.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration
HERE = os.path.dirname(os.path.abspath(__file__))


def test_spark_network_crypto_encrypts_the_channels(tmp_path):
    conf = {"spark.authenticate": "true", "spark.authenticate.secret": secrets.token_hex(16),
            "spark.network.crypto.enabled": "true"}
    env = dict(os.environ, SPARKTF_TEST_SPARK_CONF=json.dumps(conf))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=240",
         "--basetemp", str(tmp_path / "pytest"), os.path.join(HERE, "encrypted_feed.py")],
        env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, (
        proc.stdout[-6000:] + proc.stderr[-3000:])
