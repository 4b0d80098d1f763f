"""Checkpoints and exports that work on every node of a cluster and at any URL.

Under ``MultiWorkerMirroredStrategy`` every worker must take part in a save
(the variables are collective), but only the chief may write the real files:
the others write to a scratch directory that is deleted at once.  When the
cluster restarts (``TFCluster.run(..., max_restarts=N)``) or a new cluster is
run on the same model directory, every node restores the same, latest
checkpoint.

TensorFlow 2.21 writes only local (or mounted) paths, so for ``s3://``,
``hdfs://`` and ``webhdfs://`` model directories the chief saves into a local
staging directory and uploads the new files, the ``checkpoint`` state file
last: a reader that follows the state file never sees a half-written
checkpoint.  Restoring downloads the latest checkpoint first.

Typical use in ``map_fun`` (Keras)::

    ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    manager = sparktf.CheckpointManager(ckpt, args.model_dir, ctx)
    done = manager.restore_or_initialize()      # epochs already done
    model.fit(ds, epochs=10, initial_epoch=done, callbacks=[manager.keras_callback()])
    sparktf.export_model(args.export_dir, model.save, ctx)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import uuid
from typing import Any, Callable, Iterator

from . import fs, paths

logger = logging.getLogger(__name__)

#: The file in which ``tf.train.CheckpointManager`` records the checkpoints.
STATE_FILE = "checkpoint"


def _number(prefix: str) -> int:
    m = re.search(r"-(\d+)$", prefix)
    return int(m.group(1)) if m else 0


def _scratch(ctx: Any, name: str) -> str:
    """A fresh local directory for this node: under its node_dir, or the temp dir."""
    base = getattr(ctx, "node_dir", None) or tempfile.gettempdir()
    return os.path.join(base, f"{name}-{uuid.uuid4().hex[:8]}")


class CheckpointManager:
    """``tf.train.CheckpointManager`` for one node of a cluster, for a local or remote directory.

    ``directory`` is a path or URL shared by the nodes (a relative path is
    resolved with ``ctx.absolute_path``); ``ctx`` is ``map_fun``'s context,
    or None outside a cluster (then this process is the chief).
    """

    def __init__(self, checkpoint: Any, directory: str, ctx: Any = None, max_to_keep: int = 5,
                 checkpoint_name: str = "ckpt") -> None:
        import tensorflow as tf

        self.checkpoint = checkpoint
        self.url = ctx.absolute_path(directory) if ctx is not None else directory
        self.is_chief = ctx is None or ctx.is_chief
        self._ctx = ctx
        self._remote = not fs.is_local(self.url)
        if not self.is_chief:
            self._write_dir = _scratch(ctx, "checkpoint-scratch")
        elif self._remote:
            self._write_dir = _scratch(ctx, "checkpoint-staging")
        else:
            self._write_dir = paths.local_path(self.url)
        self._manager = tf.train.CheckpointManager(checkpoint, self._write_dir, max_to_keep,
                                                   checkpoint_name=checkpoint_name)
        self._uploaded: set[str] = set()

    @property
    def latest_checkpoint(self) -> str | None:
        """The prefix (``.../ckpt-N``) of the newest checkpoint in the directory, or None."""
        import tensorflow as tf

        if not self._remote:
            return tf.train.latest_checkpoint(paths.local_path(self.url))
        if not fs.exists(fs.join(self.url, STATE_FILE)):
            return None
        with fs.open_input(fs.join(self.url, STATE_FILE)) as f:
            text = f.read().decode()
        m = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', text, re.M)
        return fs.join(self.url, os.path.basename(m.group(1))) if m else None

    def restore_or_initialize(self) -> int:
        """Restore the newest checkpoint, if there is one; return its number (0 if none).

        Saved with ``checkpoint_number=epoch`` (as :meth:`keras_callback`
        does), the number is the count of epochs done: pass it to
        ``model.fit(initial_epoch=...)``.
        """
        latest = self.latest_checkpoint
        if latest is None:
            logger.info("no checkpoint in %s: starting from scratch", self.url)
            return 0
        local = latest
        if self._remote:
            local_dir = _scratch(self._ctx, "checkpoint-restore")
            name = os.path.basename(latest)
            for url in fs.listdir(self.url):
                if os.path.basename(url).startswith(name + "."):
                    fs.download(url, os.path.join(local_dir, os.path.basename(url)))
            local = os.path.join(local_dir, name)
        self.checkpoint.restore(local)
        number = _number(latest)
        logger.info("restored checkpoint %s (number %d)", latest, number)
        return number

    def save(self, checkpoint_number: int | None = None) -> str | None:
        """Save on every node (a collective step); return the chief's checkpoint URL.

        Other nodes write to a scratch directory that is removed at once.
        For a remote directory the chief uploads the new files, then the
        state file, and deletes what ``max_to_keep`` dropped.
        """
        path = self._manager.save(checkpoint_number=checkpoint_number)
        if not self.is_chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
            return None
        if not self._remote:
            logger.info("saved checkpoint %s", path)
            return path
        self._upload()
        url = fs.join(self.url, os.path.basename(path))
        logger.info("saved checkpoint %s", url)
        return url

    def _upload(self) -> None:
        fs.makedirs(self.url)
        keep = {os.path.basename(p) for p in self._manager.checkpoints}
        for name in sorted(os.listdir(self._write_dir)):
            if name != STATE_FILE and name not in self._uploaded:
                fs.upload(os.path.join(self._write_dir, name), fs.join(self.url, name))
                self._uploaded.add(name)
        fs.upload(os.path.join(self._write_dir, STATE_FILE), fs.join(self.url, STATE_FILE))
        for name in sorted(self._uploaded):
            if name.split(".")[0] not in keep:  # dropped by max_to_keep
                fs.delete(fs.join(self.url, name))
                self._uploaded.discard(name)

    def keras_callback(self, every_epochs: int = 1) -> Any:
        """A Keras callback that saves after every ``every_epochs`` epochs, numbered by epoch."""
        import tensorflow as tf

        manager = self

        class SaveEveryEpoch(tf.keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                if (epoch + 1) % every_epochs == 0:
                    manager.save(checkpoint_number=epoch + 1)

        return SaveEveryEpoch()


def export_model(url: str, save: Callable[[str], Any], ctx: Any = None) -> str | None:
    """Write an export (e.g. a SavedModel) with ``save(local_path)``; the chief's lands at ``url``.

    Every node must call this (saving is collective under MWMS); only the
    chief's copy is kept.  The export appears at ``url`` whole or not at all:
    locally it is written beside the target and renamed into place; remotely
    it is uploaded with ``saved_model.pb`` last, the file loaders look for.
    Returns ``url`` on the chief, None elsewhere.
    """
    url = ctx.absolute_path(url) if ctx is not None else url
    if ctx is not None and not ctx.is_chief:
        scratch = _scratch(ctx, "export-scratch")
        save(scratch)
        shutil.rmtree(scratch, ignore_errors=True)
        return None
    if fs.is_local(url):
        target = paths.local_path(url)
        staging = f"{target.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
        save(staging)
        if os.path.exists(target):
            old = f"{staging}.old"
            os.rename(target, old)
            os.rename(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, target)
    else:
        staging = _scratch(ctx, "export-staging")
        save(staging)
        files = [os.path.relpath(os.path.join(d, f), staging)
                 for d, _, names in os.walk(staging) for f in names]
        for rel in sorted(files, key=lambda r: (r == "saved_model.pb", r)):
            fs.upload(os.path.join(staging, rel), fs.join(url, *rel.split(os.sep)))
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported model to %s", url)
    return url


@contextlib.contextmanager
def local_copy(url: str) -> Iterator[str]:
    """A local path holding ``url`` (downloaded first when remote, removed after)."""
    if fs.is_local(url):
        yield paths.local_path(url)
        return
    tmp = tempfile.mkdtemp(prefix="sparktf-download-")
    try:
        path = os.path.join(tmp, os.path.basename(url.rstrip("/")) or "data")
        fs.download(url, path)
        yield path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
