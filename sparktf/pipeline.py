"""Spark ML pipeline stages with TensorFlowOnSpark's API: ``TFEstimator`` and ``TFModel``.

``TFEstimator(train_fn, tf_args, export_fn=None).fit(df)`` trains through
:func:`sparktf.TFCluster.run` in SPARK mode (the DataFrame's ``input_mapping``
columns are fed as Arrow batches) and returns a ``TFModel`` with the same
params.  ``TFModel(tf_args)`` is a Spark ML ``Model`` over an exported SavedModel
(``export_dir``, any :mod:`sparktf.fs` URL): ``transform(df)`` appends the
columns of ``output_mapping`` computed by :func:`sparktf.predict_udf`, so
each Python worker loads the model once, columns reach the model as numpy
without a Python step per row, and streaming DataFrames work too.

As in TensorFlowOnSpark, settings live twice: in ``tf_args`` (a dict, an
argparse Namespace or an argv list, for the user's TensorFlow code) and as
Spark ML params (``setBatchSize(...)``); :meth:`TFParams.merge_args_params`
gives one :class:`Namespace` with the params laid over the args.  Beyond
TensorFlowOnSpark, the stages are ML-persistable: ``model.save(path)`` /
``TFModel.load(path)``, also inside a ``Pipeline``; ``tf_args`` are stored
with the params as JSON, and an estimator's ``train_fn`` / ``export_fn`` by
their importable names (never pickled: loading a saved stage runs no stored
code).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import logging
import os
from typing import Any, Callable

from pyspark.ml.param.shared import Param, Params, TypeConverters
from pyspark.ml.pipeline import Estimator, Model
from pyspark.ml.util import (DefaultParamsReader, DefaultParamsWriter, MLReadable, MLReader,
                             MLWritable, MLWriter)

from sparktf import fs
from sparktf.errors import ConfigError
from sparktf.protocol import InputMode

logger = logging.getLogger(__name__)


class TFTypeConverters:
    """Type converter for dict-valued params (Spark ML has none)."""

    @staticmethod
    def toDict(value: Any) -> dict:  # noqa: N802 (TensorFlowOnSpark's name)
        if isinstance(value, dict):
            return value
        raise TypeError(f"Could not convert {value!r} to a dict")


def _mixin(class_name: str, *params: tuple[str, str, Any, str]) -> type:
    """A ``Params`` mix-in class with one ``Param`` and a ``setX``/``getX`` pair per entry.

    Each entry is ``(name, doc, type converter, X)``; TensorFlowOnSpark spells
    these classes out one by one (``HasBatchSize`` ... ``HasTagSet``).
    """
    namespace: dict[str, Any] = {"__module__": __name__,
                                 "__doc__": "Params: " + ", ".join(p[0] for p in params)}
    for name, doc, converter, suffix in params:
        namespace[name] = Param(Params._dummy(), name, doc, typeConverter=converter)
        namespace["set" + suffix] = (lambda n: lambda self, value: self._set(**{n: value}))(name)
        namespace["get" + suffix] = (lambda n: lambda self: self.getOrDefault(n))(name)
    return type(class_name, (Params,), namespace)


_int, _str, _bool = TypeConverters.toInt, TypeConverters.toString, TypeConverters.toBoolean
HasBatchSize = _mixin("HasBatchSize", ("batch_size", "Number of records per batch", _int,
                                       "BatchSize"))
HasClusterSize = _mixin("HasClusterSize", ("cluster_size", "Number of nodes in the cluster",
                                           _int, "ClusterSize"))
HasEpochs = _mixin("HasEpochs", ("epochs", "Number of epochs to train", _int, "Epochs"))
HasFeedTimeout = _mixin("HasFeedTimeout", (
    "feed_timeout", "Seconds a training node may take no data before the feed fails", _int,
    "FeedTimeout"))
HasGraceSecs = _mixin("HasGraceSecs", (
    "grace_secs", "Seconds to wait after feeding data (for final tasks like exporting a "
    "saved_model)", _int, "GraceSecs"))
HasInputMapping = _mixin("HasInputMapping", (
    "input_mapping", "Mapping of input DataFrame column to input tensor",
    TFTypeConverters.toDict, "InputMapping"))
HasInputMode = _mixin("HasInputMode", (
    "input_mode", "Input data feeding mode (1=SPARK; the only mode of a DataFrame estimator)",
    _int, "InputMode"))
HasMasterNode = _mixin("HasMasterNode", ("master_node", "Job name of master/chief worker node",
                                         _str, "MasterNode"))
HasModelDir = _mixin("HasModelDir", ("model_dir", "Path to save/load model checkpoints", _str,
                                     "ModelDir"))
HasNumPS = _mixin("HasNumPS", ("num_ps", "Number of PS nodes in cluster", _int, "NumPS"),
                  ("driver_ps_nodes", "Run PS nodes on driver locally", _bool, "DriverPSNodes"))
HasOutputMapping = _mixin("HasOutputMapping", (
    "output_mapping", "Mapping of output tensor to output DataFrame column",
    TFTypeConverters.toDict, "OutputMapping"))
HasProtocol = _mixin("HasProtocol", ("protocol", "Network protocol for Tensorflow (grpc|rdma)",
                                     _str, "Protocol"))
HasReaders = _mixin("HasReaders", ("readers", "number of reader/enqueue threads", _int,
                                   "Readers"))
HasSteps = _mixin("HasSteps", ("steps", "Maximum number of steps to train", _int, "Steps"))
HasTensorboard = _mixin("HasTensorboard", ("tensorboard", "Launch tensorboard process", _bool,
                                           "Tensorboard"))
HasTFRecordDir = _mixin("HasTFRecordDir", (
    "tfrecord_dir", "Path to temporarily export a DataFrame as TFRecords (for "
    "InputMode.TENSORFLOW apps)", _str, "TFRecordDir"))
HasExportDir = _mixin("HasExportDir", ("export_dir", "Directory to export saved_model", _str,
                                       "ExportDir"))
HasSignatureDefKey = _mixin("HasSignatureDefKey", (
    "signature_def_key", "Identifier for a specific saved_model signature", _str,
    "SignatureDefKey"))
HasTagSet = _mixin("HasTagSet", (
    "tag_set", "Comma-delimited list of tags identifying a saved_model metagraph", _str,
    "TagSet"))
HasPrecision = _mixin("HasPrecision", (
    "precision", "Arithmetic of the model's calls: float32 (as exported) or bfloat16 (CPUs "
    "with AMX or AVX512-BF16)", _str, "Precision"))


class Namespace:
    """A dict, argparse Namespace, :class:`Namespace` or argv list as attributes (TFoS' class).

    An argv list is kept as ``argv`` (and iterating yields its items);
    otherwise the keys become attributes and iterating yields the keys.
    """

    argv = None

    def __init__(self, d: Any) -> None:
        if isinstance(d, list):
            self.argv = d
        elif isinstance(d, dict):
            self.__dict__.update(d)
        elif isinstance(d, (argparse.Namespace, Namespace)):
            self.__dict__.update(vars(d))
        elif d is None:
            pass
        else:
            raise ConfigError(f"unsupported tf_args {d!r}: give a dict, an argparse.Namespace "
                              "or an argv list")

    def __iter__(self):
        return iter(self.argv if self.argv else list(self.__dict__))

    def __repr__(self) -> str:
        if self.argv:
            return repr(self.argv)
        items = ", ".join(f"{k}={self.__dict__[k]!r}" for k in sorted(self.__dict__))
        return f"{type(self).__name__}({items})"

    def __eq__(self, other: object) -> bool:
        if self.argv:
            return self.argv == other
        return isinstance(other, (Namespace, argparse.Namespace)) and vars(self) == vars(other)


class TFParams(Params):
    """Mix-in holding namespace-style ``args`` to merge with Spark ML params."""

    args: Any = None

    def merge_args_params(self) -> Namespace:
        """A copy of ``args`` with every param's value (set or default) laid over it."""
        local_args = copy.copy(self.args)
        args_dict = vars(local_args)
        for p in self.params:
            args_dict[p.name] = self.getOrDefault(p.name)
        return local_args


# ----------------------------------------------------------------------------- persistence


def _args_to_json(args: Any) -> Any:
    """``args`` as JSON-able data: a list for argv, else a dict; unstorable values raise."""
    if args is None:
        return None
    data = list(args.argv) if getattr(args, "argv", None) else dict(vars(args))
    try:
        json.dumps(data)
    except TypeError:
        bad = [k for k, v in (data.items() if isinstance(data, dict) else enumerate(data))
               if not _jsonable(v)]
        raise ConfigError(f"cannot save tf_args: {bad} hold values JSON cannot store; keep "
                          "only strings, numbers, booleans, lists and dicts in tf_args") from None
    return data


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


class _TFWriter(MLWriter):
    """Writes a stage's params and ``tf_args`` as Spark ML metadata (JSON)."""

    def __init__(self, instance: TFParams) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:  # noqa: N802 (Spark's name)
        extra = {"tf_args": _args_to_json(self.instance.args),
                 **self.instance._extra_metadata()}
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sparkSession,
                                         extraMetadata=extra)


class _TFReader(MLReader):
    """Reads what :class:`_TFWriter` wrote into a new instance of ``cls``."""

    def __init__(self, cls: type) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> Any:
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        instance = self.cls._from_metadata(metadata)
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata)
        return instance


class _Persistable(MLWritable, MLReadable):
    def write(self) -> MLWriter:
        return _TFWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _TFReader(cls)

    @classmethod
    def _from_metadata(cls, metadata: dict) -> Any:
        return cls(metadata.get("tf_args") or {})

    def _extra_metadata(self) -> dict:
        return {}


def _function_name(fn: Callable | None, what: str) -> str | None:
    """``module:qualname`` of ``fn``, which must be importable by it to be saved."""
    if fn is None:
        return None
    name = f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}"
    try:
        found = _import_function(name)
    except (ImportError, AttributeError, ValueError):
        found = None
    if found is not fn or fn.__module__ == "__main__":
        raise ConfigError(f"cannot save {what} {name}: only a module-level function that can "
                          "be imported by name (not a lambda, closure or a function of "
                          "__main__) is saved; sparktf never pickles code into a saved stage")
    return name


def _import_function(name: str) -> Callable:
    module, _, qualname = name.partition(":")
    if not module or not qualname or "<" in qualname:
        raise ValueError(name)
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


# ----------------------------------------------------------------------------- TFModel


class TFModel(Model, TFParams, HasInputMapping, HasOutputMapping, HasBatchSize, HasModelDir,
              HasExportDir, HasSignatureDefKey, HasTagSet, HasPrecision, _Persistable):
    """A Spark ML Model running an exported SavedModel (``export_dir``) on DataFrame columns.

    ``transform(df)`` returns ``df`` with one column per ``output_mapping``
    entry (signature output -> column), fed from the columns of
    ``input_mapping`` (column -> signature input), ``batch_size`` rows per
    model call, in ``precision`` (``float32``, or ``bfloat16`` on CPUs built
    for it).  Each Python worker loads the export once and reuses it across
    tasks (see :mod:`sparktf.serving`).  ``export_dir`` may be any URL
    :mod:`sparktf.fs` reads; a plain relative path is taken from the driver's
    working directory.  ``env``: variables the executors set while they read
    the export (e.g. ``AWS_*`` for S3 when ``spark.executorEnv`` lacks them);
    never saved with the model nor logged.
    """

    def __init__(self, tf_args: Any = None, env: dict[str, str] | None = None) -> None:
        super().__init__()
        self.args = Namespace(tf_args)
        self.env = dict(env) if env else None
        self._setDefault(input_mapping={}, output_mapping={}, batch_size=100, model_dir=None,
                         export_dir=None, signature_def_key="serving_default", tag_set="serve",
                         precision="float32")

    def predictor(self):
        """The :class:`sparktf.PredictUDF` that :meth:`transform` uses (reads the signature)."""
        from sparktf.serving import predict_udf

        args = self.merge_args_params()
        export_dir = args.export_dir
        if not export_dir:
            raise ConfigError("TFModel needs export_dir: the SavedModel to run (setExportDir); "
                              "a model_dir of checkpoints cannot be served")
        if fs.is_local(export_dir) and not export_dir.startswith("file://"):
            export_dir = os.path.abspath(export_dir)
        logger.info("TFModel args + params: %s", args)
        return predict_udf(export_dir, input_mapping=args.input_mapping or None,
                           output_mapping=args.output_mapping or None,
                           signature_def_key=args.signature_def_key, tag_set=args.tag_set,
                           batch_size=args.batch_size, env=self.env,
                           precision=args.precision)

    def _transform(self, dataset):
        return self.predictor().transform(dataset)


# ----------------------------------------------------------------------------- TFEstimator


class TFEstimator(Estimator, TFParams, HasInputMapping, HasClusterSize, HasNumPS, HasInputMode,
                  HasMasterNode, HasProtocol, HasGraceSecs, HasTensorboard, HasModelDir,
                  HasExportDir, HasTFRecordDir, HasBatchSize, HasEpochs, HasReaders, HasSteps,
                  HasFeedTimeout, _Persistable):
    """A Spark ML Estimator that trains ``train_fn(args, ctx)`` on a sparktf cluster.

    ``fit(df)`` starts ``cluster_size`` nodes (``num_ps`` ps nodes,
    ``master_node``, ``tensorboard``) with :func:`sparktf.TFCluster.run` in
    SPARK mode, feeds the ``input_mapping`` columns of ``df`` (in sorted
    order, as TensorFlowOnSpark) ``epochs`` times (``feed_timeout``, which
    TensorFlowOnSpark lacked), shuts the cluster down, runs ``export_fn(args)``
    if given (in a fresh process on one executor, see :mod:`sparktf.tfparallel`),
    and returns a :class:`TFModel` with the same args and params.  ``train_fn``
    gets ``args`` merged with the params (or ``tf_args`` itself when it is an
    argv list).  ``grace_secs`` is waited only when there are ps nodes:
    sparktf's shutdown already waits for the training nodes, exports included.
    Only ``input_mode`` SPARK (1) exists for a DataFrame estimator.
    """

    def __init__(self, train_fn: Callable[[Any, Any], Any], tf_args: Any = None,
                 export_fn: Callable[[Any], Any] | None = None) -> None:
        super().__init__()
        self.train_fn = train_fn
        self.export_fn = export_fn
        self.args = Namespace(tf_args)
        self._setDefault(input_mapping={}, cluster_size=1, num_ps=0, driver_ps_nodes=False,
                         input_mode=int(InputMode.SPARK), master_node="chief", protocol="grpc",
                         tensorboard=False, model_dir=None, export_dir=None, tfrecord_dir=None,
                         batch_size=100, epochs=1, readers=1, steps=1000, grace_secs=30,
                         feed_timeout=600)

    def _fit(self, dataset):
        from sparktf import TFCluster, TFParallel

        local_args = self.merge_args_params()
        logger.info("TFEstimator args + params: %s", local_args)
        if local_args.input_mode != InputMode.SPARK:
            raise ConfigError(f"TFEstimator feeds a DataFrame: input_mode must be "
                              f"InputMode.SPARK (1), not {local_args.input_mode!r}")
        spark = dataset.sparkSession
        tf_args = self.args.argv if self.args.argv else local_args
        cluster = TFCluster.run(spark.sparkContext, self.train_fn, tf_args,
                                local_args.cluster_size, local_args.num_ps,
                                local_args.tensorboard, InputMode.SPARK,
                                master_node=local_args.master_node,
                                driver_ps_nodes=local_args.driver_ps_nodes)
        columns = sorted(self.getInputMapping())
        try:
            cluster.train(dataset.select(*columns) if columns else dataset, local_args.epochs,
                          feed_timeout=local_args.feed_timeout)
        finally:
            cluster.shutdown(grace_secs=local_args.grace_secs if local_args.num_ps else 0)
        if self.export_fn is not None:
            export_fn = self.export_fn
            logger.info("TFEstimator: exporting with %s to %s", getattr(export_fn, "__name__",
                                                                        export_fn),
                        local_args.export_dir)
            TFParallel.run(spark.sparkContext, lambda args, ctx: export_fn(args), tf_args, 1,
                           use_barrier=False)
        return self._copyValues(TFModel(self.args))

    @classmethod
    def _from_metadata(cls, metadata: dict) -> Any:
        functions = metadata.get("functions") or {}
        train_fn = _import_function(functions["train_fn"])
        export_fn = functions.get("export_fn")
        return cls(train_fn, metadata.get("tf_args") or {},
                   _import_function(export_fn) if export_fn else None)

    def _extra_metadata(self) -> dict:
        return {"functions": {"train_fn": _function_name(self.train_fn, "train_fn"),
                              "export_fn": _function_name(self.export_fn, "export_fn")}}
