"""sparktf.predict_udf and sparktf.pipeline.TFModel against real Spark and TensorFlow.

The exports come from make_exports.py (Keras 3 ``model.export``, tf-keras
``model.save``, ``tf.saved_model.save``) with fixed weights, so every
prediction is checked against numpy.  Loads are counted by the WebHDFS
server: each load downloads ``saved_model.pb`` once.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

import make_exports
from sparktf import ModelLoadError, PredictInputError, fs, predict_udf
from sparktf.pipeline import TFModel
from sparktf.serving import cache, precision

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    make_exports.main(str(out))
    return out


@pytest.fixture(scope="module")
def spark(sc):
    from pyspark.sql import SparkSession
    return SparkSession(sc)


def rows_df(spark, n=200, partitions=10):
    """``id`` and ``x`` = [id, 1, 0, -1] (float)."""
    return spark.range(n, numPartitions=partitions).selectExpr(
        "id", "array(cast(id as float), 1f, 0f, -1f) as x")


def k3_expected(ids):
    x = np.stack([np.asarray(ids, np.float32), np.ones(len(ids)), np.zeros(len(ids)),
                  -np.ones(len(ids))], axis=1).astype(np.float32)
    return x @ make_exports.K3_KERNEL + make_exports.K3_BIAS


def k3_model(url, **kw):
    return (TFModel({}, **kw).setExportDir(url).setInputMapping({"x": "x"})
            .setOutputMapping({"output_0": "y"}).setBatchSize(8))


def test_loaded_once_per_python_worker_across_10_tasks_via_webhdfs(spark, exports,
                                                                     webhdfs_server):
    shutil.copytree(exports / "k3", webhdfs_server.local("/serving/k3"))
    pb = "/serving/k3/saved_model.pb"
    scored = k3_model(webhdfs_server.url + "/serving/k3").transform(rows_df(spark))
    before = webhdfs_server.opened.get(pb, 0)       # the driver read the signature
    for run in range(2):
        got = scored.orderBy("id").collect()
        assert [r.id for r in got] == list(range(200))
        np.testing.assert_allclose([r.y for r in got], k3_expected(range(200)), rtol=1e-6)
        loads = webhdfs_server.opened.get(pb, 0) - before
        # 10 tasks on 3 executors with one Python worker each: 1 to 3 loads, not 10;
        # the second job reuses the cached models.
        assert 1 <= loads <= 3, (run, loads)
        if run == 0:
            first = loads
    assert loads == first


def test_bfloat16_runs_only_the_model_calls_that_ask_for_it(spark, exports):
    """Both jobs run on the same Python workers and the same cached model: the bfloat16
    rewrite is on for the first job's calls only."""
    expected = k3_expected(range(200))
    fast = k3_model(str(exports / "k3")).setPrecision("bfloat16")
    got = np.array([r.y for r in fast.transform(rows_df(spark)).orderBy("id").collect()])
    exact = k3_model(str(exports / "k3")).transform(rows_df(spark)).orderBy("id").collect()
    np.testing.assert_allclose(got, expected, rtol=1e-2)
    with open("/proc/cpuinfo") as f:
        if precision.cpu_has_bfloat16(f.read()):   # else oneDNN may leave the graph as it is
            assert not np.array_equal(got, expected), "bfloat16 was asked for, not applied"
    np.testing.assert_allclose([r.y for r in exact], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16"):
        predict_udf(str(exports / "k3"), precision="float16")


def test_formats_versions_side_by_side_and_binary_images(spark, exports, tmp_path):
    from pyspark.sql import functions as F

    df = rows_df(spark, 40, 2).withColumn("b", F.col("id") * 3)
    models = str(exports / "raw")
    newest = predict_udf(models)                         # the highest numbered version: 2
    first = predict_udf(models, version=1)
    assert newest.signature.url.endswith("/2") and first.signature.url.endswith("/1")
    v2 = newest.transform(df.withColumnRenamed("x", "a")).orderBy("id").collect()
    v1 = df.select("id", first("x", "b").alias("p")).orderBy("id").collect()
    again = newest.transform(df.withColumnRenamed("x", "a")).orderBy("id").collect()
    for r1, r2, r3 in zip(v1, v2, again):
        total = r1.id + 1 + 0 - 1
        assert r1.p.y == [total, total] and r2.y == [2 * total] * 2 and r3.y == r2.y
        assert r1.p.z == r2.z == 2 * r1.id * 3 and r2.s == str(r1.id * 3)

    # A binary column of 4 uint8 pixels per row feeds the (None, 2, 2, 1) float input.
    pixels = predict_udf(models, signature_def_key="pixels")
    images = spark.createDataFrame([(bytes([i, 1, 2, 3]),) for i in range(5)], "x binary")
    assert [r.total for r in pixels.transform(images).collect()] == [i + 6 for i in range(5)]

    # tf-keras model.save (TensorFlowOnSpark's test model): double input cast to float32.
    tfk = (TFModel({}).setExportDir(str(exports / "tfk")).setInputMapping({"c1": "dense_input"})
           .setOutputMapping({"dense": "cout"}))
    test = spark.createDataFrame([([1.0, 1.0], [0.0])], ["c1", "c2"])
    assert tfk.transform(test).head().cout[0] == pytest.approx(3.14 + 1.618, abs=1e-5)

    # A newer export at the same URL is picked up when asked for; the old function refuses it.
    url = str(tmp_path / "model")
    shutil.copytree(exports / "raw" / "1", url)
    old = predict_udf(url)
    shutil.rmtree(url)
    shutil.copytree(exports / "raw" / "2", url)
    renamed = df.withColumnRenamed("x", "a").where("id = 5")
    assert predict_udf(url).transform(renamed).head().y == [10.0, 10.0]
    assert old.signature.version != predict_udf(url).signature.version


def test_transform_from_s3_and_save_load_in_a_pipeline(spark, exports, s3_server, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel

    url = s3_server["url"] + "/serving/k3"
    fs.upload(str(exports / "k3"), url)
    model = k3_model(url, env=s3_server["env"]).setBatchSize(16)
    df = rows_df(spark, 60, 3)
    got = model.transform(df).collect()       # same partitions, same order below
    np.testing.assert_allclose([r.y for r in got], k3_expected([r.id for r in got]), rtol=1e-6)

    local = k3_model(str(exports / "k3")).setBatchSize(16)
    local.save(str(tmp_path / "tfmodel"))
    loaded = TFModel.load(str(tmp_path / "tfmodel"))
    assert loaded.uid == local.uid and loaded.getBatchSize() == 16
    assert loaded.getInputMapping() == {"x": "x"} and loaded.getTagSet() == "serve"
    pipeline = Pipeline(stages=[local]).fit(df)
    pipeline.save(str(tmp_path / "pipeline"))
    reloaded = PipelineModel.load(str(tmp_path / "pipeline"))
    assert isinstance(reloaded.stages[0], TFModel)
    for m in (loaded, pipeline, reloaded):
        assert [r.y for r in m.transform(df).collect()] == [r.y for r in got]


def test_streaming_dataframe(spark, exports, tmp_path):
    source = tmp_path / "in"
    rows_df(spark, 30, 3).write.parquet(str(source))
    stream = spark.readStream.schema("id long, x array<float>").parquet(str(source))
    query = (k3_model(str(exports / "k3")).transform(stream).writeStream.format("memory")
             .queryName("serving_stream").trigger(availableNow=True).start())
    query.awaitTermination(120)
    got = spark.sql("select id, y from serving_stream order by id").collect()
    np.testing.assert_allclose([r.y for r in got], k3_expected(range(30)), rtol=1e-6)


def test_bad_columns_and_unloadable_models(spark, exports, tmp_path):
    from pyspark.sql import functions as F

    model = k3_model(str(exports / "k3"))
    df = rows_df(spark, 20, 2)
    with pytest.raises(PredictInputError, match=r"column 'x' is missing; it feeds signature "
                                                r"input 'x' \(float32 of shape \(None, 4\)\)"):
        model.transform(df.drop("x"))
    with pytest.raises(PredictInputError, match=r"column 'x' has type array<string>.*signature "
                                                r"input 'x'.*\(None, 4\)"):
        model.transform(df.withColumn("x", F.expr("cast(x as array<string>)")))
    short = model.transform(df.withColumn("x", F.expr("slice(x, 1, 3)")))
    with pytest.raises(Exception, match=r"PredictInputError: column 'x' in partition \d+ has 3 "
                                        r"values per row .*signature input 'x', which expects "
                                        r"float32 of shape \(None, 4\)"):
        short.collect()

    with pytest.raises(ModelLoadError, match="no such directory"):
        predict_udf(str(tmp_path / "nowhere"))
    with pytest.raises(ModelLoadError, match="no signature 'predict'; it has"):
        predict_udf(str(exports / "k3"), signature_def_key="predict")
    broken = tmp_path / "broken"
    shutil.copytree(exports / "k3", broken)
    (broken / "saved_model.pb").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelLoadError, match=f"{re.escape(str(broken))}.*not a SavedModel"):
        predict_udf(str(broken))
    # An export replaced after the function was created: the executors refuse to mix versions.
    changed = tmp_path / "changed"
    shutil.copytree(exports / "raw" / "1", changed)
    stale = predict_udf(str(changed), input_mapping={"x": "a", "id": "b"})
    shutil.rmtree(changed)
    shutil.copytree(exports / "raw" / "2", changed)
    with pytest.raises(Exception, match="ModelLoadError: the model at " + re.escape(str(changed))
                                        + " changed after the prediction function was created"):
        df.select(stale()).collect()
    # Loadable signature, missing variables: loading names the URL and TensorFlow's reason.
    shutil.rmtree(broken)
    shutil.copytree(exports / "k3", broken)
    shutil.rmtree(broken / "variables")
    signature = predict_udf(str(broken)).signature
    with pytest.raises(ModelLoadError, match="cannot load the model at " + re.escape(str(broken))
                                             + r" \(tags serve, signature 'serving_default'\): "):
        cache.load_model(signature, "/CPU:0")


def test_estimator_saved_by_function_name(spark, tmp_path):
    from sparktf.errors import ConfigError
    from sparktf.pipeline import TFEstimator

    estimator = (TFEstimator(make_exports.main, {"lr": 0.1}).setInputMapping({"x": "x"})
                 .setClusterSize(2).setFeedTimeout(60))
    estimator.save(str(tmp_path / "estimator"))
    loaded = TFEstimator.load(str(tmp_path / "estimator"))
    assert loaded.train_fn is make_exports.main and loaded.export_fn is None
    assert loaded.getClusterSize() == 2 and loaded.getFeedTimeout() == 60
    assert loaded.args.lr == 0.1 and loaded.getInputMapping() == {"x": "x"}
    with pytest.raises(ConfigError, match="cannot save train_fn .*lambda"):
        TFEstimator(lambda args, ctx: None, {}).save(str(tmp_path / "lambda"))
