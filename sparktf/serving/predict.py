"""``sparktf.predict_udf``: an exported SavedModel as a Spark column function.

::

    predict = sparktf.predict_udf("s3://bucket/models/mnist", batch_size=1024,
                                  input_mapping={"image": "keras_tensor"},
                                  output_mapping={"output_0": "probabilities"})
    scored = predict.transform(df)                  # df + a `probabilities` column
    scored = df.withColumn("p", predict("image"))   # the same as a column expression

It is a Spark Arrow UDF (``SCALAR_ITER``), so it works on batch and streaming
DataFrames alike: each task gets Arrow batches of the input columns, turns them
into numpy arrays without a Python step per row (:mod:`.convert`), runs the
signature on at most ``batch_size`` rows at a time with the model its Python
worker loaded once (:mod:`.cache`), and returns the outputs as Arrow arrays.

The driver reads the model's signature when the function is created (without
TensorFlow: :mod:`.signature`), which fixes the output columns' types and the
export's version; :meth:`PredictUDF.transform` also checks the DataFrame's
columns against it before a job starts.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import uuid
import warnings
from typing import Iterator

import numpy as np
import pyarrow as pa

from sparktf.errors import ModelLoadError, PredictInputError
from sparktf.serving import cache, convert
from sparktf.serving import precision as precision_
from sparktf.serving.signature import Signature, TensorSpec, read_signature

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1024


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What each task needs: the signature and which column feeds which input, in order."""

    signature: Signature
    columns: tuple[str, ...]        # input columns, in the UDF's argument order
    inputs: tuple[str, ...]         # the signature input each column feeds
    outputs: tuple[str, ...]        # signature outputs, in result order
    output_columns: tuple[str, ...]
    batch_size: int
    precision: str = "float32"
    env: dict[str, str] | None = dataclasses.field(default=None, repr=False)


class PredictUDF:
    """A SavedModel signature as a Spark column function; create it with :func:`predict_udf`.

    ``input_mapping`` maps column -> signature input, ``output_mapping``
    signature output -> column.  Called with columns, it returns one column:
    the output itself when there is one, else a struct of all mapped outputs.
    """

    def __init__(self, signature: Signature, input_mapping: dict[str, str],
                 output_mapping: dict[str, str], batch_size: int,
                 env: dict[str, str] | None = None, precision: str = "float32") -> None:
        self.signature = signature
        self.input_mapping = dict(input_mapping)
        self.output_mapping = dict(output_mapping)
        self.batch_size = batch_size
        self.precision = precision
        self._env = dict(env) if env else None

    @property
    def output_columns(self) -> list[str]:
        return [self.output_mapping[name] for name in self.output_mapping]

    @property
    def return_type(self):
        """The Spark type of the column ``__call__`` returns."""
        from pyspark.sql import types as T

        specs = [self.signature.outputs[name] for name in self.output_mapping]
        if len(specs) == 1:
            return convert.spark_type(specs[0])
        return T.StructType([T.StructField(self.output_mapping[s.name], convert.spark_type(s))
                             for s in specs])

    def __call__(self, *cols):
        """The prediction column for ``cols`` (default: the ``input_mapping`` columns, in order).

        Columns given by name or as ``Column`` feed the mapped inputs in the
        order of ``input_mapping``.
        """
        from pyspark.sql import functions as F
        from pyspark.sql.functions import ArrowUDFType, arrow_udf

        names = list(self.input_mapping)
        if not cols:
            cols = tuple(names)
        if len(cols) != len(names):
            raise PredictInputError(
                f"the model at {self.signature.url} takes {len(names)} input column(s) "
                f"({', '.join(f'{c} -> {i}' for c, i in self.input_mapping.items())}); "
                f"got {len(cols)}")
        plan = _Plan(self.signature, tuple(names), tuple(self.input_mapping.values()),
                     tuple(self.output_mapping), tuple(self.output_columns), self.batch_size,
                     self.precision, self._env)
        fn = functools.partial(_predict_batches, plan)
        with warnings.catch_warnings():     # "prefer type hints": a partial has none
            warnings.simplefilter("ignore", UserWarning)
            udf = arrow_udf(fn, self.return_type, ArrowUDFType.SCALAR_ITER)
        return udf(*[F.col(c) if isinstance(c, str) else c for c in cols])

    def check(self, schema) -> None:
        """Raise :class:`PredictInputError` if ``schema`` (a StructType) cannot feed the model."""
        fields = {f.name: f for f in schema.fields}
        for column, name in self.input_mapping.items():
            spec = self.signature.inputs[name]
            if column not in fields:
                raise PredictInputError(
                    f"column {column!r} is missing; it feeds signature input {name!r} "
                    f"({spec.describe()}) of {self.signature.url}. The DataFrame has columns "
                    f"{list(fields)}")
            convert.check_spark_type(column, fields[column].dataType, spec)

    def transform(self, df):
        """``df`` with the mapped output columns appended (replacing same-named columns)."""
        from pyspark.sql import functions as F

        self.check(df.schema)
        outputs = self.output_columns
        if len(outputs) == 1:
            return df.withColumn(outputs[0], self())
        tmp = f"__sparktf_predict_{uuid.uuid4().hex[:8]}"
        keep = [F.col(c) for c in df.columns if c not in outputs]
        return df.withColumn(tmp, self()).select(
            *keep, *[F.col(tmp).getField(c).alias(c) for c in outputs])


def predict_udf(model_url: str, *, input_mapping: dict[str, str] | None = None,
                output_mapping: dict[str, str] | None = None,
                signature_def_key: str | None = None, tag_set: str | None = None,
                batch_size: int = DEFAULT_BATCH_SIZE, version: int | None = None,
                env: dict[str, str] | None = None, precision: str = "float32") -> PredictUDF:
    """A :class:`PredictUDF` running the SavedModel at ``model_url`` (any :mod:`sparktf.fs` URL).

    ``model_url`` is an export (Keras 3 ``model.export``, tf-keras
    ``model.save``, ``tf.saved_model.save``) or a directory of numbered
    exports, of which ``version`` or the newest is used.  ``input_mapping``
    (column -> signature input) defaults to one column per input, named as
    the input; ``output_mapping`` (signature output -> column) to every
    output under its own name.  ``signature_def_key`` defaults to
    ``serving_default``, ``tag_set`` (comma-separated) to ``serve``;
    ``batch_size`` bounds the rows per model call.  ``env`` holds variables
    the executors set while they read the export (e.g. ``AWS_*`` for S3, when
    ``spark.executorEnv`` does not give them); it travels in the tasks and is
    never logged.  ``precision="bfloat16"`` runs the model's matrix work in
    bfloat16 on CPUs built for it, about 2.5x faster (:mod:`.precision`).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    precision_.check(precision)
    signature = read_signature(model_url, signature_def_key, tag_set, version)
    inputs = dict(input_mapping) if input_mapping else {n: n for n in signature.inputs}
    outputs = dict(output_mapping) if output_mapping else {n: n for n in signature.outputs}
    unknown = [i for i in inputs.values() if i not in signature.inputs]
    if unknown:
        raise PredictInputError(f"input_mapping names {unknown}, not inputs of signature "
                                f"{signature.key!r} of {signature.url}; its inputs: "
                                f"{_describe(signature.inputs)}")
    missing = [i for i in signature.inputs if i not in inputs.values()]
    if missing:
        raise PredictInputError(f"signature {signature.key!r} of {signature.url} needs inputs "
                                f"{missing}, which input_mapping does not feed; its inputs: "
                                f"{_describe(signature.inputs)}")
    unknown = [o for o in outputs if o not in signature.outputs]
    if unknown:
        raise PredictInputError(f"output_mapping names {unknown}, not outputs of signature "
                                f"{signature.key!r} of {signature.url}; its outputs: "
                                f"{_describe(signature.outputs)}")
    logger.info("predicting with %s version %s in %s: %s -> %s", signature.url,
                signature.version, precision, inputs, outputs)
    return PredictUDF(signature, inputs, outputs, batch_size, env, precision)


def _describe(specs: dict[str, TensorSpec]) -> str:
    return ", ".join(f"{name} ({spec.describe()})" for name, spec in specs.items())


# ----------------------------------------------------------------------------- executor side


def _predict_batches(plan: _Plan, batches: Iterator) -> Iterator[pa.Array]:
    """The Arrow UDF: each batch of input arrays -> one array of outputs (runs in a task)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    partition = context.partitionId() if context is not None else 0
    model = None
    first_row = 0
    for arrays in batches:
        if not isinstance(arrays, (tuple, list)):
            arrays = (arrays,)
        rows = len(arrays[0])
        where = f"partition {partition}"
        feed = {name: convert.to_numpy(array, column, plan.signature.inputs[name], where,
                                       first_row)
                for array, column, name in zip(arrays, plan.columns, plan.inputs)}
        first_row += rows
        if rows and model is None:
            with cache.environment(plan.env or {}):
                model = cache.CACHE.get(plan.signature, cache.current_device())
            precision_.warn_if_emulated(plan.precision)
        yield _run(model, plan, feed, rows)


def _run(model: cache.LoadedModel | None, plan: _Plan, feed: dict[str, np.ndarray],
         rows: int) -> pa.Array:
    """Run the signature on ``feed`` in slices of ``batch_size`` rows; outputs as Arrow."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in plan.outputs}
    if rows:
        import tensorflow as tf

        with tf.device(model.device), precision_.applied(tf, plan.precision):
            for start in range(0, rows, plan.batch_size):
                stop = min(rows, start + plan.batch_size)
                result = model.fn(**{name: tf.convert_to_tensor(value[start:stop])
                                     for name, value in feed.items()})
                for name in plan.outputs:
                    value = result[name].numpy()
                    if value.ndim == 0 or value.shape[0] != stop - start:
                        raise ModelLoadError(
                            f"output {name!r} of {plan.signature.url} has shape {value.shape} "
                            f"for {stop - start} input rows: it needs one row per input row")
                    parts[name].append(value)
    columns = [convert.to_arrow(p[0] if len(p) == 1 else np.concatenate(p)) if p
               else _empty(plan.signature.outputs[name]) for name, p in parts.items()]
    if len(columns) == 1:
        return columns[0]
    return pa.StructArray.from_arrays(columns, names=list(plan.output_columns))


def _empty(spec: TensorSpec) -> pa.Array:
    from pyspark.sql.pandas.types import to_arrow_type

    return pa.array([], type=to_arrow_type(convert.spark_type(spec)))
