"""Spark's own ``s3a://`` file system for the tests: hadoop-aws and the AWS SDK v2 modules.

The jars (``tests/s3a/pom.xml``) come from Maven into the Hadoop jar cache outside
the source tree (``SPARKTF_HADOOP_CACHE``, by default ``~/.cache/sparktf-hadoop``),
once; :func:`spark_jars` lists them for ``spark.jars``.  :func:`hadoop_conf` is the
S3A configuration that points Spark at an S3-compatible endpoint (the moto server).
"""

from __future__ import annotations

import glob
import os

from servers import maven

POM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "s3a", "pom.xml")
CACHE_ENV, CACHE_DEFAULT = "SPARKTF_HADOOP_CACHE", "~/.cache/sparktf-hadoop"


def spark_jars() -> list[str]:
    """hadoop-aws, the SDK modules it loads and tensorflow-hadoop (fetched once)."""
    base = maven.cache_dir(POM, CACHE_ENV, CACHE_DEFAULT,
                           "s3a-" + maven.pom_property(POM, "hadoop.version"))
    with maven.locked(base):
        jars = maven.copy_dependencies(POM, os.path.join(base, "jars"), what="the s3a tests")
    return sorted(glob.glob(os.path.join(jars, "*.jar")))


def hadoop_conf(endpoint: str, env: dict[str, str]) -> dict[str, str]:
    """S3A settings for an endpoint like ``http://127.0.0.1:PORT`` and ``AWS_*`` credentials."""
    return {
        "fs.s3a.endpoint": endpoint,
        "fs.s3a.endpoint.region": env.get("AWS_REGION", "us-east-1"),
        "fs.s3a.path.style.access": "true",
        "fs.s3a.connection.ssl.enabled": str(endpoint.startswith("https:")).lower(),
        "fs.s3a.access.key": env["AWS_ACCESS_KEY_ID"],
        "fs.s3a.secret.key": env["AWS_SECRET_ACCESS_KEY"],
        "fs.s3a.aws.credentials.provider":
            "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        # Task output renamed once, straight into place, not twice: a rename on S3 is a copy
        # (mnist_data_setup's six directories: 16 s instead of 21 s, warm, on moto).
        "mapreduce.fileoutputcommitter.algorithm.version": "2",
    }
