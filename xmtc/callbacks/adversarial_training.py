"""Adversarial training inside ``fit``: train on adversarial versions of a share of each batch (issue 15).

The paper (§5) leaves open how to adversarially train an XMTC model when every adversarial example costs many
model passes. This callback answers it with the shared attack engine (``xmtc.attack.recipe.build_search``):
before a training step it picks a share of the batch's documents, for each a positive target among its true
labels that the model currently ranks in its top-k (uniformly, or weighted toward tail labels by inverse
propensity), runs the positive-targeted attack on them together (their texts share forward passes) and rewrites
the batch: the adversarial texts are added beside the clean ones (``mode="beside"``) or replace them
(``mode="instead"``), keeping their document's labels, and the whole batch is encoded again in one
``pl_module.encode`` call so that padding is consistent.

Which adversarial texts are trained on: every text the attack changed (``keep="changed"``, the default), not
only successes. The greedy search keeps only substitutions that lower the target's score, so a failed attack
still yields a text on which the model is less sure of a true label: a hard example of the kind training should
see, and early on (a confident model) or late (a robust one) successes alone would be too few to train on.
``keep="successful"`` trains on successes only.

Cost stays visible and bounded: documents are attacked in groups of ``settings.documents_at_once`` and no new
group starts once ``max_seconds_per_step`` has passed; per step the callback logs what it attacked, the
successes, the seconds spent attacking (``attack_seconds``), the step's wall time (``step_seconds``, with
``attacked_step`` saying whether it attacked) and the running means ``mean_step_seconds_with_attack`` and
``mean_step_seconds_without_attack``, and the running totals (``total_attacked``, ``total_seconds``, ...) that
survive a logger's thinning to every ``log_every_n_steps``-th step.

Training is unchanged outside the rewritten batch: attacks run inside ``training_state_preserved`` (eval mode,
no gradients, every module's mode and the python/numpy/torch random states restored), and the choice of
documents and targets draws from a generator of the callback's own (seeded by ``seed``, the step and the rank).
Under DDP each rank attacks its own batch: no collectives, so nothing can hang; logging goes through
``pl_module.log`` (rank 0's values reach the loggers).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from xmtc.attack.base import AttackResult
from xmtc.attack.recipe import AttackSettings, attack_documents, build_search, build_transformation, load_encoder
from xmtc.callbacks.robustness import training_state_preserved

TargetChoice = Literal["uniform", "inverse_propensity"]
Mode = Literal["beside", "instead"]
Keep = Literal["changed", "successful"]

# Cheap by default: gradient importance (no queries to rank words), few candidates, a small change budget.
DEFAULT_SETTINGS = AttackSettings(kinds=["positive"], k=5, max_change_rate=0.05, importance="gradient",
                                  candidates=8, encoder=None, batch_size=128, documents_at_once=16)


class AdversarialTraining(Callback):
    """Train on adversarial versions of a share of every batch's documents (module docstring).

    Args:
        settings: the attack (``AttackSettings``): ``k``, ``max_change_rate`` (the change budget),
            ``candidates`` / ``masked_lm`` or a ``transformation`` part (e.g. ``WordVectorNeighbours``, the cheap
            source), ``importance`` (``gradient``: the white-box path, no queries; or ``mask``), ``search``,
            ``query_budget``, ``batch_size`` and ``documents_at_once``. ``kinds`` must be ``[positive]``; the
            attacked split, bins and sampling options are not used.
        share: share of each batch's documents attacked, in (0, 1] (at least one document).
        targets: ``uniform`` over a document's true labels in the model's top-k, or ``inverse_propensity``
            (weighted toward tail labels, paper §2's propensity model).
        start_epoch: first epoch (0-based) that attacks.
        every_n_steps: attack on steps whose ``global_step`` is a multiple of this.
        mode: ``beside`` (adversarial copies appended to the batch) or ``instead`` (they replace their
            documents).
        keep: ``changed`` (every text the attack changed) or ``successful`` (successes only).
        max_seconds_per_step: no new group of documents is attacked after this many seconds in a step (null: no
            limit); the step trains on what was made.
        seed: seed of the choice of documents and targets.
        prefix: name prefix of the logged metrics.
    """

    def __init__(
        self,
        settings: AttackSettings = DEFAULT_SETTINGS,
        share: float = 0.25,
        targets: TargetChoice = "uniform",
        start_epoch: int = 0,
        every_n_steps: int = 1,
        mode: Mode = "beside",
        keep: Keep = "changed",
        max_seconds_per_step: float | None = None,
        seed: int = 0,
        prefix: str = "adversarial",
    ) -> None:
        super().__init__()
        if not 0.0 < share <= 1.0:
            raise ValueError(f"AdversarialTraining: share must be in (0, 1], got {share}")
        if targets not in ("uniform", "inverse_propensity"):
            raise ValueError(f"AdversarialTraining: targets must be 'uniform' or 'inverse_propensity', got {targets!r}")
        if mode not in ("beside", "instead"):
            raise ValueError(f"AdversarialTraining: mode must be 'beside' or 'instead', got {mode!r}")
        if keep not in ("changed", "successful"):
            raise ValueError(f"AdversarialTraining: keep must be 'changed' or 'successful', got {keep!r}")
        if start_epoch < 0:
            raise ValueError(f"AdversarialTraining: start_epoch must be >= 0, got {start_epoch}")
        if every_n_steps < 1:
            raise ValueError(f"AdversarialTraining: every_n_steps must be >= 1, got {every_n_steps}")
        if max_seconds_per_step is not None and max_seconds_per_step <= 0:
            raise ValueError("AdversarialTraining: max_seconds_per_step must be > 0 or null, got "
                             f"{max_seconds_per_step}")
        if list(settings.kinds) != ["positive"]:
            raise ValueError("AdversarialTraining: settings.kinds must be [positive] (a true label is pushed out of "
                             f"the top-k and the copy keeps the document's labels), got {settings.kinds}")
        if settings.k < 1:
            raise ValueError(f"AdversarialTraining: settings.k must be >= 1, got {settings.k}")
        if settings.documents_at_once < 1:
            raise ValueError(f"AdversarialTraining: settings.documents_at_once must be >= 1, got "
                             f"{settings.documents_at_once}")
        self.settings = dataclasses.replace(settings, kinds=["positive"])
        self.share = share
        self.targets = targets
        self.start_epoch = start_epoch
        self.every_n_steps = every_n_steps
        self.mode = mode
        self.keep = keep
        self.max_seconds_per_step = max_seconds_per_step
        self.seed = seed
        self.prefix = prefix
        self.totals = {"chosen": 0, "attacked": 0, "successes": 0, "added": 0, "seconds": 0.0, "steps": 0}
        self._tools: tuple[Any, Any] | None = None
        self._step_started = 0.0
        self._attacked_step = False
        self._step_times = {"with": [0.0, 0], "without": [0.0, 0]}  # seconds, steps

    # -- Lightning hooks --

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Load the substitution source (masked LM or vectors) and check the attack fits the model now, so a bad
        path or an unsupported importance fails before training, not at the first attacked step."""
        if stage != "fit":
            return
        for needed in ("score_texts", "encode", "label_stats"):
            if not hasattr(pl_module, needed):
                raise TypeError(f"AdversarialTraining needs a model with {needed} (an xmtc XMTCModule)")
        if self._tools is None:
            s = self.settings
            device = str(trainer.strategy.root_device)
            with training_state_preserved(pl_module):  # building models may draw random numbers
                transformation = build_transformation(s, device=device)
                encoder = load_encoder(s, device=device) if s.min_similarity is not None else None
                build_search(pl_module, transformation, s, encoder)  # e.g. gradient importance on a model without
            self._tools = (transformation, encoder)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._step_started = time.perf_counter()
        self._attacked_step = self._active(trainer)
        stats = {"chosen": 0, "attacked": 0, "successes": 0, "added": 0}
        seconds = 0.0
        if self._attacked_step:
            began = time.perf_counter()
            stats = self._attack_batch(trainer, pl_module, batch)
            seconds = time.perf_counter() - began
            for key, value in stats.items():
                self.totals[key] += value
            self.totals["seconds"] += seconds
            self.totals["steps"] += 1
        # every value on every step (zeros when not attacking): Lightning's loggers repeat a value that a step did
        # not log, which would make skipped steps look attacked
        p = self.prefix
        values = {**{f"{p}/{k}": float(v) for k, v in stats.items()}, f"{p}/attack_seconds": seconds,
                  f"{p}/attacked_step": float(self._attacked_step),
                  # running totals: loggers keep every log_every_n_steps-th step only, which can miss every
                  # attacked step (every_n_steps 2, log_every_n_steps 20); totals survive the thinning
                  **{f"{p}/total_{k}": float(v) for k, v in self.totals.items()}}
        pl_module.log_dict(values, on_step=True, on_epoch=False, batch_size=int(batch["targets"].shape[0]))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        seconds = time.perf_counter() - self._step_started
        kind = "with" if self._attacked_step else "without"
        self._step_times[kind][0] += seconds
        self._step_times[kind][1] += 1
        # the step's wall time, and the running means over the run of steps with and without an attack
        values = {f"{self.prefix}/step_seconds": seconds}
        for name, (total, count) in self._step_times.items():
            if count:
                values[f"{self.prefix}/mean_step_seconds_{name}_attack"] = total / count
        pl_module.log_dict(values, on_step=True, on_epoch=False, batch_size=int(batch["targets"].shape[0]))

    def state_dict(self) -> dict[str, Any]:
        return {"totals": dict(self.totals)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.totals.update(state_dict.get("totals", {}))

    # -- the attack --

    def _active(self, trainer: L.Trainer) -> bool:
        return trainer.current_epoch >= self.start_epoch and trainer.global_step % self.every_n_steps == 0

    def _choose(self, trainer: L.Trainer, pl_module: Any, batch: dict[str, Any]) -> tuple[list[int], list[int]]:
        """Documents to attack and one positive target each: a true label in the model's current top-k (else the
        attack would skip it), uniform or weighted by inverse propensity. One forward pass of the batch."""
        targets = batch["targets"].detach().float().cpu()
        size = targets.shape[0]
        gen = torch.Generator().manual_seed(hash((self.seed, trainer.global_step, trainer.global_rank)) % 2**63)
        order = torch.randperm(size, generator=gen)
        wanted = max(1, math.ceil(self.share * size))
        k = min(self.settings.k, pl_module.num_labels)
        with training_state_preserved(pl_module):
            scores = pl_module.scores_from_logits(pl_module(batch["inputs"])).float().cpu()
        in_topk = torch.zeros_like(targets).scatter_(1, scores.topk(k, dim=1).indices, 1.0)
        weights = targets * in_topk
        if self.targets == "inverse_propensity":
            weights = weights * torch.as_tensor(pl_module.label_stats.inv_propensity, dtype=torch.float32)[None, :]
        usable = order[(weights[order] > 0).any(dim=1)][:wanted]
        if usable.numel() == 0:
            return [], []
        chosen = torch.multinomial(weights[usable], 1, generator=gen)[:, 0]
        return usable.tolist(), chosen.tolist()

    def _attack_batch(self, trainer: L.Trainer, pl_module: Any, batch: dict[str, Any]) -> dict[str, int]:
        """Attack the chosen documents in groups (up to the time limit) and rewrite ``batch`` in place."""
        s = self.settings
        transformation, encoder = self._tools  # type: ignore[misc]
        docs, labels = self._choose(trainer, pl_module, batch)
        texts: list[str] = list(batch["texts"])
        started = time.perf_counter()
        results: list[AttackResult] = []
        with training_state_preserved(pl_module):
            search = build_search(pl_module, transformation, s, encoder)
            for start in range(0, len(docs), s.documents_at_once):
                if self.max_seconds_per_step is not None and time.perf_counter() - started > self.max_seconds_per_step:
                    break
                group = range(start, min(start + s.documents_at_once, len(docs)))
                results += attack_documents(search, pl_module, [texts[docs[i]] for i in group],
                                            [(labels[i], "positive") for i in group], s, encoder)
        kept = [(docs[i], r.adversarial_text) for i, r in enumerate(results)
                if r.changes and (r.success or self.keep == "changed")]
        if kept:
            self._rewrite(pl_module, batch, kept)
        return {"chosen": len(docs), "attacked": sum(r.status != "skipped" for r in results),
                "successes": sum(r.success for r in results), "added": len(kept)}

    def _rewrite(self, pl_module: Any, batch: dict[str, Any], kept: list[tuple[int, str]]) -> None:
        """Clean and adversarial texts encoded together (one padding), on the module's device; an adversarial copy
        keeps its document's labels (and every other per-document field)."""
        texts = list(batch["texts"])
        size = len(texts)
        rows = torch.tensor([doc for doc, _ in kept], dtype=torch.long)
        if self.mode == "instead":
            for doc, text in kept:
                texts[doc] = text
        else:
            texts += [text for _, text in kept]
            for key, value in list(batch.items()):
                if key != "inputs" and isinstance(value, Tensor) and value.dim() and value.shape[0] == size:
                    batch[key] = torch.cat([value, value[rows.to(value.device)]])
        batch["inputs"] = {k: v.to(pl_module.device) for k, v in pl_module.encode(texts).items()}
        batch["texts"] = texts
