"""An attack run inside Lightning's test loop, so the trainer's devices, strategy and nodes shard it.

Rank 0 checks the output directory, chooses the pairs and lists the jobs (``AttackRun.plan``) and broadcasts
the plan. The jobs are cut into groups of ``documents_at_once`` (the same groups whatever the number of
processes); group i goes to rank i mod world: whole groups, none twice, none padded in (unlike a
``DistributedSampler``), so every row is computed with the same companions, hence the same forward passes, as
in a single-process run. Each rank streams its rows to its own part file, flushed per group; at the end rank 0
merges the parts into one results.jsonl in job order and writes the report.

Every rank takes part in every collective the same number of times: each has ``ceil(groups / world)`` rounds
(sitting the last out when it has no group left), and after each round all decide together whether one of them
failed, so a failure stops every process instead of leaving the others waiting in a collective. A failure on
rank 0 while planning is passed on the same way.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from xmtc.attack.run_store import PartWriter
from xmtc.errors import UserError, user_error

if TYPE_CHECKING:  # the run drives this module (AttackRun.run); only its types are named here
    from xmtc.attack.runner import AttackRun, Job, Plan, Tools

T = TypeVar("T")

#: The Trainer options of an attack run beside the device ones: nothing is logged, checkpointed or summarised,
#: Lightning's bar gives way to the attack's own, and autograd stays available for gradient importance.
ATTACK_TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
    "inference_mode": False,
}


def attack_trainer(device: str = "cpu") -> L.Trainer:
    """A one-process Trainer on ``device`` ("cpu", "cuda", "cuda:1", "mps") for an attack run."""
    d = torch.device(device)
    accelerator = {"cuda": "gpu"}.get(d.type, d.type)
    return L.Trainer(accelerator=accelerator, devices=[d.index] if d.index is not None else 1,
                     **ATTACK_TRAINER_DEFAULTS)


@contextmanager
def _autograd_available() -> Iterator[None]:
    """No inference mode (a trainer's test loop may run under it): tensors made here may meet autograd later
    (gradient importance enables it where it needs it); no gradients recorded otherwise."""
    with torch.inference_mode(False), torch.no_grad():
        yield


class _Rounds(IterableDataset):
    """The group index this process attacks in each round (-1: it sits the round out). Iterable, so Lightning
    leaves the dealing to us instead of putting a (padding) DistributedSampler in; no ``__len__``, which
    Lightning would warn about (and need not know: its progress bar is off)."""

    def __init__(self, items: list[int]) -> None:
        self.items = items

    def __iter__(self) -> Iterator[int]:
        return iter(self.items)


class AttackModule(L.LightningModule):
    """Runs an ``AttackRun`` in ``trainer.test``; ``summary`` holds its report afterwards (every rank).

    The targets that are ``nn.Module``s are registered as submodules, so Lightning puts them on the process's
    device; the masked LM and the sentence encoder are loaded there once the plan is known."""

    def __init__(self, attack_run: AttackRun, show_progress: bool = True) -> None:
        super().__init__()
        self.attack_run = attack_run
        self.targets = nn.ModuleDict({n: m for n, m in attack_run.models.items() if isinstance(m, nn.Module)})
        self.show_progress = show_progress
        self.summary: dict[str, Any] | None = None
        self._plan: Plan | None = None
        self._groups: list[list[Job]] = []
        self._tools: Tools | None = None
        self._writer: PartWriter | None = None
        self._bar: Any = None

    # -- collectives --

    def _from_rank_zero(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on rank 0, its value on every rank; an error there is raised on every rank (a user error
        as one, so the command line still prints one line)."""
        trainer = self.trainer
        value, error = None, None
        if trainer.is_global_zero:
            try:
                value = fn()
            except Exception as e:
                if trainer.world_size == 1:
                    raise
                is_user = user_error(e) is not None
                error = (is_user, str(e) if is_user else f"{type(e).__name__}: {e}", e)
        value, shared = trainer.strategy.broadcast((value, None if error is None else error[:2]), src=0)
        if error is not None:
            raise error[2]
        if shared is not None:
            is_user, message = shared
            raise UserError(message) if is_user else RuntimeError(f"attack: rank 0 failed: {message}")
        return value

    def _gather(self, item: Any) -> list[Any]:
        if self.trainer.world_size == 1 or not torch.distributed.is_initialized():
            return [item]
        parts: list[Any] = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(parts, item)
        return parts

    # -- Lightning hooks --

    def test_dataloader(self) -> DataLoader:
        """Plan on rank 0, broadcast; load the tools here; deal the groups."""
        run, trainer = self.attack_run, self.trainer
        with _autograd_available():
            self._plan = plan = self._from_rank_zero(run.plan)
            run.adopt(plan)
            self._tools = run.tools(str(trainer.strategy.root_device))
        self._groups = groups = run.groups(plan)
        world, rank = trainer.world_size, trainer.global_rank
        rounds = math.ceil(len(groups) / world)
        items = [i * world + rank if i * world + rank < len(groups) else -1 for i in range(rounds)]
        self._writer = run.store.writer(rank)
        if self.show_progress and trainer.is_global_zero:
            mine = sum(len(groups[i]) for i in items if i >= 0)
            if world == 1:
                total = len(plan.jobs)
                self._bar = tqdm(total=total, initial=total - mine, desc="attacks")
            else:
                self._bar = tqdm(total=mine, desc=f"attacks (rank 0's share of {world} processes)")
        return DataLoader(_Rounds(items), batch_size=None)

    def test_step(self, batch: int, batch_idx: int) -> None:
        trainer, failure = self.trainer, ""
        index = int(batch)
        if index >= 0:
            try:
                with _autograd_available():
                    rows = self.attack_run.attack_group(self._groups[index], self._tools)  # type: ignore[arg-type]
                self._writer.write(rows)  # type: ignore[union-attr]
                if self._bar is not None:
                    self._bar.update(len(rows))
            except Exception as e:
                if trainer.world_size == 1:
                    raise
                failure = f"rank {trainer.global_rank}: {type(e).__name__}: {e}"
        # one joint decision per round: any rank that failed stops them all
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(bool(failure), all=False):
            failures = [f for f in self._gather(failure) if f]
            raise RuntimeError(f"attack failed: {'; '.join(failures)}")

    def on_test_end(self) -> None:
        """Every rank's rows are written: rank 0 merges them in job order and reports."""
        self._close()
        self.trainer.strategy.barrier("xmtc-attack-written")
        plan = self._plan
        order = {self.attack_run.key(j): j.order for j in plan.jobs}  # type: ignore[union-attr]

        def finish() -> dict[str, Any]:
            rows = self.attack_run.store.merge(order=lambda key: order.get(key, len(order)))
            return self.attack_run.report(rows)

        self.summary = self._from_rank_zero(finish)

    def on_exception(self, exception: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def run_quietly(trainer: L.Trainer, module: AttackModule) -> None:
    """``trainer.test(module)`` without Lightning's notes that do not apply to an attack run."""
    with warnings.catch_warnings():
        # the groups are dealt by us, one at a time; workers would only copy the models
        warnings.filterwarnings("ignore", message=r".*does not have many workers")
        warnings.filterwarnings("ignore", category=FutureWarning, message=r"`isinstance\(treespec, LeafSpec\)`")
        trainer.test(module, verbose=False)
