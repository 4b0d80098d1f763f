"""Mirror a node's local TensorBoard log directory to a remote URL.

``python -m sparktf.node.logsync LOCAL_DIR URL --interval S --timeout S``

TensorFlow cannot write ``s3://`` or ``hdfs://`` (nor TensorBoard read them), so
with a remote ``log_dir`` every node writes its summaries to a local directory,
``ctx.log_dir`` (``<node_dir>/tensorboard``, which the TensorBoard beside the
chief also reads), and this small process, started by the node's supervisor,
copies that directory to the remote URL (``ctx.log_url``):

* every ``interval`` seconds (``SPARKTF_LOG_SYNC_INTERVAL`` in the node's
  environment, 10 by default) it uploads the files that are new, or whose
  size or modification time changed, since their last successful upload.  A
  growing event file is uploaded whole again (S3 cannot append); each upload
  is atomic (:func:`sparktf.fs.upload`), so a reader sees a consistent prefix
  of the file;
* when its standard input closes (the supervisor closes it once the node
  process has ended, and it closes by itself if the supervisor dies) it makes
  a last pass and exits.  That pass is bounded by ``timeout`` seconds
  (``SPARKTF_LOG_SYNC_TIMEOUT``, 30 by default), so an unreachable store never
  holds the shutdown up;
* an upload that fails is logged as a warning naming the URL and the reason
  (once per run of failures) and is retried on the next pass; it never stops
  the node.  Nothing is deleted remotely.

Where each node's directory goes: every node syncs its own directory, to a
place of its own, so that no two nodes ever write the same remote file (the
Keras TensorBoard callback writes ``train/`` and ``validation/`` on every
worker, and event file names are only *usually* unique):

* the chief (rank 0: ``chief`` or ``master`` 0, else ``worker`` 0) to the URL
  itself, so ``tensorboard --logdir URL`` shows the chief's runs at the top;
* every other node to ``URL/<job>-<index>`` (``URL/worker-1``, ``URL/ps-0``,
  ``URL/evaluator-0``), which TensorBoard shows as runs of their own.

A node that writes nothing uploads nothing (no remote directory appears).
``workertemp_N`` directories, which the Keras TensorBoard callback of a
non-chief MultiWorkerMirroredStrategy worker writes and deletes again at the
end of ``fit``, are not mirrored.
The supervisor uses :func:`start` and :func:`finish`; this module imports
:mod:`sparktf.fs` (pyarrow) only in the uploading process.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import threading
from typing import IO, Mapping

from .. import paths, roles

logger = logging.getLogger("sparktf.node.logsync")  # not __name__: this runs as __main__

#: Environment variables (of the node) that set the upload period and the last pass's bound.
INTERVAL_ENV = "SPARKTF_LOG_SYNC_INTERVAL"
TIMEOUT_ENV = "SPARKTF_LOG_SYNC_TIMEOUT"
DEFAULT_INTERVAL = 10.0
DEFAULT_TIMEOUT = 30.0

#: Directories the Keras TensorBoard callback of a non-chief MultiWorkerMirroredStrategy
#: worker writes and deletes at the end of ``fit``: temporary, not mirrored.
_KERAS_TEMP_DIR = re.compile(r"workertemp_\d+")

#: Exit codes of the uploading process after its last pass.
OK, FAILED, TIMED_OUT = 0, 1, 2


def is_remote(log_dir: str | None) -> bool:
    """Whether ``log_dir`` (as the driver passes it) is a remote URL, not a local path."""
    return bool(log_dir) and not paths.is_local(log_dir)


def node_url(log_url: str, job: str, index: int, cluster_spec: dict[str, list[str]]) -> str:
    """Where node ``job:index`` mirrors its log directory: see the module's docstring."""
    if roles.rank(job, index, cluster_spec) == 0:
        return log_url
    return f"{log_url.rstrip('/')}/{job}-{index}"


def setting(env: Mapping[str, str], name: str, default: float) -> float:
    """The positive number in ``env[name]``, or ``default`` (with a warning if it is invalid)."""
    text = env.get(name, "")
    if not text:
        return default
    try:
        value = float(text)
        if value > 0:
            return value
    except ValueError:
        pass
    logger.warning("ignoring %s=%r: not a positive number of seconds; using %g", name, text,
                   default)
    return default


class Mirror:
    """Uploads the files under ``local_dir`` that are new or changed to ``url``.

    A file counts as changed when its size or modification time differs from
    those it had before its last successful upload.  :meth:`sync` never
    raises: a failure is logged and the file is tried again on the next pass.
    """

    def __init__(self, local_dir: str, url: str) -> None:
        self.local_dir = local_dir
        self.url = url
        self._uploaded: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns)
        self._failing = False

    def pending(self) -> list[tuple[str, tuple[int, int]]]:
        """``(relative path, (size, mtime_ns))`` of the files to upload, in sorted order."""
        found = []
        for root, dirs, files in os.walk(self.local_dir):
            dirs[:] = sorted(d for d in dirs if not _KERAS_TEMP_DIR.fullmatch(d))
            for name in sorted(files):
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:  # removed since the walk listed it
                    continue
                rel = os.path.relpath(path, self.local_dir)
                key = (st.st_size, st.st_mtime_ns)
                if self._uploaded.get(rel) != key:
                    found.append((rel, key))
        return found

    def sync(self) -> bool:
        """Upload what is pending; True when all of it was uploaded.

        Stops at the first failure: when the store is unreachable every other
        file would fail too, each after its own timeout.
        """
        from .. import fs

        try:
            todo = self.pending()
        except OSError as e:  # the local directory cannot be read
            self._failed(self.local_dir, f"{type(e).__name__}: {e}")
            return False
        count = 0
        for rel, key in todo:
            target = fs.join(self.url, *rel.split(os.sep))
            try:
                fs.upload(os.path.join(self.local_dir, rel), target)
            except FileNotFoundError:
                if not os.path.exists(os.path.join(self.local_dir, rel)):
                    continue  # removed locally meanwhile (a Keras worker's temporary dir)
                self._failed(target, "the destination was not found")
                return False
            except Exception as e:  # noqa: BLE001 - whatever the store says, keep training
                self._failed(target, f"{type(e).__name__}: {e}")
                return False
            self._uploaded[rel] = key
            count += 1
        if self._failing:
            self._failing = False
            logger.info("uploading TensorBoard logs to %s works again", self.url)
        if count:
            logger.debug("uploaded %d changed files from %s to %s", count, self.local_dir,
                         self.url)
        return True

    def _failed(self, target: str, reason: str) -> None:
        level = logging.DEBUG if self._failing else logging.WARNING
        self._failing = True
        logger.log(level, "cannot upload TensorBoard logs from %s to %s (%s): %s; the node "
                   "goes on and the upload is retried", self.local_dir, self.url, target, reason)


def run(mirror: Mirror, interval: float, stop: threading.Event, timeout: float) -> int:
    """Sync every ``interval`` s until ``stop`` is set, then once more within ``timeout`` s.

    Returns :data:`OK`, :data:`FAILED` (the last pass failed) or
    :data:`TIMED_OUT` (it did not end in time; its thread is left behind, a
    daemon).
    """
    result: list[bool] = []

    def loop() -> None:
        while not stop.wait(interval):
            mirror.sync()
        result.append(mirror.sync())

    worker = threading.Thread(target=loop, name="sparktf-logsync", daemon=True)
    worker.start()
    stop.wait()
    worker.join(timeout)
    if worker.is_alive():
        logger.warning("the last upload of TensorBoard logs from %s to %s did not finish "
                       "within %g s (%s); files written since the previous upload may be "
                       "missing there", mirror.local_dir, mirror.url, timeout, TIMEOUT_ENV)
        return TIMED_OUT
    if not (result and result[0]):
        logger.warning("the last upload of TensorBoard logs from %s to %s failed; files "
                       "written since the previous successful upload are missing there",
                       mirror.local_dir, mirror.url)
        return FAILED
    logger.info("TensorBoard logs of %s are uploaded to %s", mirror.local_dir, mirror.url)
    return OK


# ----------------------------------------------------------------------------- supervisor side


def start(local_dir: str, url: str, env: Mapping[str, str],
          log: IO) -> tuple[subprocess.Popen, float]:
    """Start the uploading process with environment ``env``; return it and its last pass's bound.

    Its output goes to ``log`` (the node's log file).  It makes its last pass
    when :func:`finish` closes its standard input.
    """
    interval = setting(env, INTERVAL_ENV, DEFAULT_INTERVAL)
    timeout = setting(env, TIMEOUT_ENV, DEFAULT_TIMEOUT)
    os.makedirs(local_dir, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparktf.node.logsync", local_dir, url,
         "--interval", str(interval), "--timeout", str(timeout)],
        stdin=subprocess.PIPE, stdout=log, stderr=log, env=dict(env),
        start_new_session=True)
    return proc, timeout


def finish(proc: subprocess.Popen, timeout: float, url: str) -> int | None:
    """Let the uploading process make its last pass; wait at most ``timeout`` s (plus slack).

    Returns its exit code, or None when it had to be killed.
    """
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        return proc.wait(timeout + 5.0)  # it bounds the pass itself; the slack is for exiting
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        logger.warning("killed the upload of TensorBoard logs to %s: it did not end within "
                       "%g s", url, timeout + 5.0)
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sparktf.node.logsync",
                                     description="Mirror a local log directory to a URL.")
    parser.add_argument("local_dir")
    parser.add_argument("url")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    args = parser.parse_args(argv)
    from .. import fs  # noqa: F401 - pyarrow loads now, not within the last pass's bound
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("sparktf")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logger.info("mirroring %s to %s every %g s", args.local_dir, args.url, args.interval)

    stop = threading.Event()

    def wait_for_eof() -> None:
        try:
            sys.stdin.buffer.read()
        finally:
            stop.set()

    threading.Thread(target=wait_for_eof, name="sparktf-logsync-stdin", daemon=True).start()
    code = run(Mirror(args.local_dir, args.url), args.interval, stop, args.timeout)
    sys.stderr.flush()
    os._exit(code)  # not waiting for a hung upload's thread, nor pyarrow's S3 finalization


if __name__ == "__main__":
    main()
