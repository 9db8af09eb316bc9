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

# One counter per group name: every rank makes the same exchanges in the same order, so the n-th
# exchange has the same keys on every rank and never meets an earlier one's values.
_ROUNDS: dict[str, count[int]] = {}


class RankGroup:
    """The ranks of ``process_group`` (the world by default; one process when none is initialized)."""

    def __init__(self, process_group: Any) -> None:
        import torch.distributed as dist

        self.dist = dist if dist.is_available() and dist.is_initialized() else None
        self.group = process_group
        self.rank = self.dist.get_rank(process_group) if self.dist else 0
        self.size = self.dist.get_world_size(process_group) if self.dist else 1

    def _exchange(self, value: Any, senders: range) -> dict[int, Any]:
        """``value`` from each rank in ``senders``, read by every rank, through the group's store."""
        from torch.distributed import distributed_c10d as c10d

        assert self.dist is not None
        group = self.group if self.group is not None else c10d._get_default_group()
        store: Any = c10d._get_process_group_store(group)  # set() takes bytes too; its stub says str
        prefix = f"ckptkit/{next(_ROUNDS.setdefault(group.group_name, count()))}/"
        if self.rank in senders:
            store.set(prefix + str(self.rank), pickle.dumps(value))
        return {rank: pickle.loads(store.get(prefix + str(rank))) for rank in senders}

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if self.dist is None:
            return value
        return self._exchange(value, range(1))[0]

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
        errors = [error]
        if self.dist is not None:
            sent = self._exchange(error, range(self.size))
            errors = [sent[rank] for rank in range(self.size)]
        failed = [(rank, e) for rank, e in enumerate(errors) if e is not None]
        if failed:
            if failure is not None:
                raise failure
            rank, message = failed[0]
            raise CkptError(f"rank {rank} failed while saving: {message}")
        return result
