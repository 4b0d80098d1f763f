"""MNIST with the Spark ML pipeline API: TFEstimator.fit on a DataFrame, TFModel.transform.

    spark-submit --master local-cluster[2,1,2048] examples/mnist/keras/mnist_pipeline.py \\
        --cluster_size 2 --images_labels data/mnist/csv --export_dir mnist_export \\
        --model_path mnist_tfmodel

Reads ``--images_labels``/train and /test (CSV: label, then 784 pixels) into DataFrames
with an ``image array<float>`` and a ``label`` column, trains the CNN of mnist_model.py on
``--cluster_size`` nodes (SPARK mode, MultiWorkerMirroredStrategy) with ``TFEstimator``,
which returns a ``TFModel`` over the export; scores the test set with ``transform`` (the
predict UDF: each executor loads the export once), prints the accuracy, saves the fitted
model with ``--model_path`` and checks that the loaded one predicts the same.
"""

from __future__ import annotations

import argparse
import os
import sys


def main_fun(args, ctx):
    """Runs on every TF node; ``args`` holds the estimator's params (batch_size, epochs...)."""
    import tensorflow as tf
    from mnist_model import build_model

    import sparktf

    if args.seed is not None:   # as mnist_spark.py --seed: the same initial weights
        tf.keras.utils.set_random_seed(args.seed)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    # As mnist_spark.py: dataset()'s epoch agreement gives every worker the same steps.
    strategy.extended.experimental_enable_get_next_as_optional = False
    feed = ctx.get_data_feed(train_mode=True)
    ds = feed.dataset(args.batch_size, columns=["image", "label"]).map(
        lambda image, label: (tf.reshape(image, (-1, 28, 28, 1)), label))
    with strategy.scope():
        model = build_model(tf)
    hist = model.fit(ds, epochs=args.epochs, verbose=2)
    print(f"final loss: {hist.history['loss'][-1]:.4f}", flush=True)
    sparktf.export_model(args.export_dir, model.save, ctx)


def read_images(spark, path):
    """``label,p0,...,p783`` lines -> (image array<float> scaled to [0, 1], label long)."""
    return (spark.read.text(path)
            .selectExpr("split(value, ',') as v")
            .selectExpr("transform(slice(v, 2, 784), p -> cast(cast(p as float) / 255 as float))"
                        " as image",
                        "cast(v[0] as long) as label"))


def accuracy(scored):
    return scored.selectExpr(
        "avg(cast(array_position(probabilities, array_max(probabilities)) - 1 = label "
        "as double)) as accuracy").first().accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cluster_size", type=int, default=2, help="number of TF nodes")
    p.add_argument("--images_labels", default="data/mnist/csv",
                   help="directory with train/ and test/ CSV")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=64, help="per-worker batch size")
    p.add_argument("--seed", type=int, default=None,
                   help="seed TensorFlow on every node (initial weights, dropout)")
    p.add_argument("--partitions", type=int, default=None,
                   help="coalesce the training data to N partitions (with --seed and 1, every "
                        "run feeds the nodes the same rows in the same order)")
    p.add_argument("--export_dir", default="mnist_export")
    p.add_argument("--model_path", default="mnist_tfmodel", help="where the TFModel is saved")
    args = p.parse_args()

    from pyspark.sql import SparkSession

    import sparktf
    from sparktf.pipeline import TFEstimator, TFModel

    spark = SparkSession.builder.getOrCreate()
    model_py = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_model.py")
    if os.path.exists(model_py):   # on YARN in cluster mode it comes with --py-files instead
        spark.sparkContext.addPyFile(model_py)
    export_dir = os.path.abspath(args.export_dir) if "://" not in args.export_dir \
        else args.export_dir
    train = read_images(spark, os.path.join(args.images_labels, "train"))
    if args.partitions:
        train = train.coalesce(args.partitions)
    test = read_images(spark, os.path.join(args.images_labels, "test")).cache()

    estimator = (TFEstimator(main_fun, {"seed": args.seed})
                 .setInputMapping({"image": "image", "label": "label"})
                 .setClusterSize(args.cluster_size).setMasterNode("chief")
                 .setEpochs(args.epochs).setBatchSize(args.batch_size)
                 .setExportDir(export_dir))
    model = estimator.fit(train)

    # The export's signature names its input and output (read without TensorFlow).
    signature = sparktf.predict_udf(export_dir).signature
    (input_name,), (output_name,) = signature.inputs, signature.outputs
    model.setInputMapping({"image": input_name}).setOutputMapping(
        {output_name: "probabilities"}).setBatchSize(256)
    scored = model.transform(test)
    print(f"mnist_pipeline: test accuracy {accuracy(scored):.4f}", flush=True)

    model.write().overwrite().save(args.model_path)
    loaded = TFModel.load(args.model_path)
    same = (scored.select("probabilities").collect()
            == loaded.transform(test).select("probabilities").collect())
    print(f"mnist_pipeline: saved to {args.model_path}; loaded model predicts the same: {same}")
    if not same:
        sys.exit("the loaded model's predictions differ")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
