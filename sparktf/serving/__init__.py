"""Serving exported models on Spark: :func:`predict_udf` and its model cache.

See :mod:`sparktf.serving.predict`.
"""

from sparktf.serving.predict import PredictUDF, predict_udf

__all__ = ["PredictUDF", "predict_udf"]
