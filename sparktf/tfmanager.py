"""``sparktf.TFManager``: TensorFlowOnSpark's ``TFManager.start`` for local tests.

In TFoS a ``TFManager`` was a ``multiprocessing`` manager that carried the fed
rows between Spark's Python worker and the TF process.  sparktf feeds nodes over
its own authenticated channel (``ctx.mgr`` is the node's feed server), so what
remains of ``TFManager`` is what users call it for: the local, in-process
harness that drives a ``map_fun``'s ``DataFeed`` without Spark
(:mod:`sparktf.feed.local`).
"""

from __future__ import annotations

from typing import Any, Iterable

from .errors import ConfigError
from .feed.local import LocalManager, LocalQueue

__all__ = ["start", "connect", "LocalManager", "LocalQueue"]


def start(authkey: Any, queues: Iterable[str], mode: str = "local") -> LocalManager:
    """A new in-process manager with one queue per name in ``queues``.

    ``authkey`` is accepted for TFoS compatibility and not used: nothing leaves
    the process.  Only ``mode='local'`` exists; TFoS's ``'remote'`` mode (a
    manager listening on every interface) has no place in sparktf, whose nodes
    are fed over an authenticated channel.
    """
    if mode != "local":
        raise ConfigError(f"TFManager.start(mode={mode!r}): only mode='local' (an in-process "
                          "test harness) is supported; TF nodes in a cluster are fed by "
                          "TFCluster.train()/inference() through ctx.mgr")
    return LocalManager(queues)


def connect(address: Any, authkey: Any) -> None:
    """TFoS connected to a remote manager here; sparktf has none to connect to."""
    raise ConfigError("TFManager.connect() is not supported: sparktf has no remote manager. "
                      "In map_fun use TFNode.DataFeed(ctx.mgr); in a unit test use "
                      "TFManager.start(authkey, ['input', 'output'], 'local')")
