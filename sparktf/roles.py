"""Role assignment and ``TF_CONFIG``: pure functions, no sockets, no Spark.

Roles follow TensorFlowOnSpark's order: the first ``num_ps`` nodes are ``ps``,
then one ``master_node`` (``'chief'`` in TF2 style) if given, then one
``evaluator`` if ``eval_node``, and the rest are ``worker``.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from .errors import ConfigError

#: Jobs that take part in synchronous training and receive fed data.
TRAINING_JOBS = ("chief", "master", "worker")
#: Jobs whose map_fun usually never returns; shutdown stops them.
SERVING_JOBS = ("ps", "evaluator")


class Role(NamedTuple):
    job: str
    index: int

    @property
    def name(self) -> str:
        return f"{self.job}:{self.index}"


def assign_roles(num_nodes: int, num_ps: int = 0, master_node: str | None = None,
                 eval_node: bool = False) -> list[Role]:
    """Return the role of each node, indexed by node number (executor_id)."""
    if num_nodes < 1:
        raise ConfigError(f"num_executors must be at least 1, got {num_nodes}")
    if num_ps < 0:
        raise ConfigError(f"num_ps must be >= 0, got {num_ps}")
    if master_node not in (None, "chief", "master"):
        raise ConfigError(f"master_node must be None, 'chief' or 'master', got {master_node!r}")
    if num_nodes - num_ps - (1 if eval_node else 0) < 1:
        raise ConfigError(
            f"num_executors={num_nodes} leaves no training node after num_ps={num_ps}"
            f"{' and an evaluator' if eval_node else ''}")
    roles = [Role("ps", i) for i in range(num_ps)]
    if master_node:
        roles.append(Role(master_node, 0))
    if eval_node:
        roles.append(Role("evaluator", 0))
    roles += [Role("worker", i) for i in range(num_nodes - len(roles))]
    return roles


def cluster_spec(roles: list[Role], addresses: list[str]) -> dict[str, list[str]]:
    """``{job: [host:port, ...]}`` from the roles and each node's TF address.

    The evaluator is not part of the cluster spec: TensorFlow's evaluator
    runs on its own and only reads checkpoints.
    """
    if len(roles) != len(addresses):
        raise ValueError(f"{len(roles)} roles but {len(addresses)} addresses")
    spec: dict[str, list[str]] = {}
    for role, addr in sorted(zip(roles, addresses), key=lambda ra: ra[0].index):
        if role.job != "evaluator":
            spec.setdefault(role.job, []).append(addr)
    return spec


def tf_config(spec: dict[str, list[str]], role: Role) -> str:
    """The ``TF_CONFIG`` JSON string for one node."""
    return json.dumps({"cluster": spec, "task": {"type": role.job, "index": role.index},
                       "environment": "cloud"})


def num_workers(roles: list[Role]) -> int:
    """Number of training nodes (chief, master and workers), as TFoS's ``ctx.num_workers``."""
    return sum(1 for r in roles if r.job in TRAINING_JOBS)


def data_nodes(roles: list[Role]) -> list[int]:
    """Node numbers that take fed data in SPARK mode (never ps or evaluator)."""
    return [i for i, r in enumerate(roles) if r.job in TRAINING_JOBS]


def rank(job: str, index: int, spec: dict[str, list[str]]) -> int | None:
    """A training node's rank among the ``num_workers`` training nodes, else None.

    The chief (or master) is rank 0 and writes checkpoints, exports and summaries;
    the workers follow.  ps and evaluator nodes have no rank.
    """
    if job in ("chief", "master"):
        return index
    if job == "worker":
        return index + len(spec.get("chief", [])) + len(spec.get("master", []))
    return None


def awaited_nodes(roles: list[Role]) -> list[int]:
    """The nodes whose end means training is over.

    With ps nodes (ParameterServerStrategy) the chief drives training and the
    workers only serve, so the chief alone is awaited; otherwise every chief,
    master and worker node.
    """
    chief = [i for i, r in enumerate(roles) if r.job in ("chief", "master")]
    if chief and any(r.job == "ps" for r in roles):
        return chief
    return data_nodes(roles)


def tensorboard_node(roles: list[Role]) -> int:
    """The node that runs TensorBoard: the chief or master, else the first worker."""
    chief = [i for i, r in enumerate(roles) if r.job in ("chief", "master")]
    return (chief or data_nodes(roles))[0]
