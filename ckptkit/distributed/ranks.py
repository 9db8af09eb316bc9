"""The few collectives saving needs, with a one-process fallback and errors shared by all ranks."""

from __future__ import annotations

from typing import Any

from ckptkit.errors import CkptError

__all__ = ["RankGroup"]


class RankGroup:
    """The ranks of ``process_group`` (the world by default; one process when none is initialized)."""

    def __init__(self, process_group: Any) -> None:
        import torch.distributed as dist

        self.dist = dist if dist.is_available() and dist.is_initialized() else None
        self.group = process_group
        self.rank = self.dist.get_rank(process_group) if self.dist else 0
        self.size = self.dist.get_world_size(process_group) if self.dist else 1

    def broadcast(self, value: Any) -> Any:
        if self.dist is None:
            return value
        box = [value]
        src = self.dist.get_global_rank(self.group, 0) if self.group is not None else 0
        self.dist.broadcast_object_list(box, src=src, group=self.group)
        return box[0]

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
            errors = [None] * self.size
            self.dist.all_gather_object(errors, error, group=self.group)
        failed = [(rank, e) for rank, e in enumerate(errors) if e is not None]
        if failed:
            if failure is not None:
                raise failure
            rank, message = failed[0]
            raise CkptError(f"rank {rank} failed while saving: {message}")
        return result

    run_first = agree
