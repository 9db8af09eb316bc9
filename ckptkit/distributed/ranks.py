"""The few exchanges saving needs, with a one-process fallback and errors shared by all ranks.

Values travel through the process group's key-value store, not through collectives. A gloo
collective's buffers are freed by the backend's worker thread a moment after the call returns; when
that call is the last one before a script exits, the thread can free them while Python is already
shutting down, and the process aborts (``terminate called without an active exception``). torch
keeps the group, and those threads, alive past ``destroy_process_group()`` once FSDP2 has used it,
so a script cannot wait for them. Store reads and writes run in the calling thread and leave nothing
behind.
"""

from __future__ import annotations

import pickle
from itertools import count
from typing import Any

from ckptkit.errors import CkptError

__all__ = ["RankGroup"]

# Per group name: a counter (every rank makes the same exchanges in the same order, so the n-th
# exchange has the same keys on every rank and never meets an earlier one's values) and, on group
# rank 0, the keys every rank has read by the time the next exchange gathers at rank 0.
_ROUNDS: dict[str, count[int]] = {}
_STALE: dict[str, list[str]] = {}


class RankGroup:
    """The ranks of ``process_group`` (the world by default; one process when none is initialized)."""

    def __init__(self, process_group: Any) -> None:
        import torch.distributed as dist

        self.dist = dist if dist.is_available() and dist.is_initialized() else None
        self.group = process_group
        self.rank = self.dist.get_rank(process_group) if self.dist else 0
        self.size = self.dist.get_world_size(process_group) if self.dist else 1

    def _store(self) -> tuple[Any, str, str]:
        """The group's store (``set`` takes bytes too; its stub says str), its name, this round's prefix."""
        from torch.distributed import distributed_c10d as c10d

        group = self.group if self.group is not None else c10d._get_default_group()
        name = group.group_name
        return (
            c10d._get_process_group_store(group),
            name,
            f"ckptkit/{next(_ROUNDS.setdefault(name, count()))}/",
        )

    def broadcast(self, value: Any) -> Any:
        """Group rank 0's ``value`` on every rank."""
        if self.dist is None:
            return value
        store, name, prefix = self._store()
        if self.rank == 0:
            store.set(prefix + "value", pickle.dumps(value))
            _STALE.setdefault(name, []).append(prefix + "value")
            return value
        return pickle.loads(store.get(prefix + "value"))

    def _failures(self, error: str | None) -> dict[int, str]:
        """Every rank's error, if any, by group rank: each rank tells rank 0, rank 0 tells every rank.

        Two store requests a rank and one ``multi_get`` on rank 0, whatever the group's size; rank 0
        deletes what every rank has read (the keys of earlier exchanges and this one's reports).
        """
        store, name, prefix = self._store()
        store.set(prefix + str(self.rank), pickle.dumps(error))
        if self.rank == 0:
            reports = [prefix + str(rank) for rank in range(self.size)]
            errors = [pickle.loads(b) for b in store.multi_get(reports)]
            stale = _STALE.setdefault(name, [])
            for key in [*stale, *reports]:
                store.delete_key(key)
            stale[:] = [prefix + "failed"]
            store.set(prefix + "failed", pickle.dumps({r: e for r, e in enumerate(errors) if e is not None}))
        failed: dict[int, str] = pickle.loads(store.get(prefix + "failed"))
        return failed

    def agree(self, step: Any) -> Any:
        """Run ``step`` on every rank; if any rank fails, every rank raises (no rank is left waiting)."""
        error: str | None = None
        failure: Exception | None = None
        result = None
        try:
            result = step()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if self.dist is None:
                raise
            failure = exc
        if self.dist is None:
            return result
        failed = self._failures(error)
        if failure is not None:
            raise failure
        if failed:
            rank, message = min(failed.items())
            where = f"rank {rank}"
            if self.group is not None:
                where = f"rank {self.dist.get_global_rank(self.group, rank)} (rank {rank} of its group)"
            raise CkptError(f"{where} failed while saving: {message}")
        return result
