"""What every XMTC LightningModule shares: the loss head, metrics, one step for every stage,
raw-text scoring for the attack suite, and a checkpoint that carries its label space and tokenizer.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from xmtc.data.label_stats import LabelStats
from xmtc.losses import LossHead, NormalLoss
from xmtc.metrics import PrecisionAtKByFrequency, XMCMetrics

_CKPT_KEY = "xmtc"  # where a checkpoint keeps the label space and extra_checkpoint_state()

# XMTCModule overrides the batch-transfer hooks on purpose (texts are encoded by the model, on the way to the
# device); Lightning says so on every run when a datamodule is given, which is how xmtc is always used.
for _hook in ("on_before_batch_transfer", "transfer_batch_to_device"):
    warnings.filterwarnings(
        "ignore", category=UserWarning,
        message=f"You have overridden `{_hook}` in `LightningModule` but have passed in a `LightningDataModule`")


def _stats_to_state(stats: LabelStats) -> dict[str, Any]:
    return {"label_ids": stats.label_ids, "label_names": stats.label_names, "freqs": stats.freqs.tolist(),
            "num_train_docs": stats.num_train_docs, "propensity_a": stats.propensity_a,
            "propensity_b": stats.propensity_b}


def _stats_from_state(state: dict[str, Any]) -> LabelStats:
    return LabelStats(**{**state, "freqs": np.asarray(state["freqs"], dtype=np.int64)})


class XMTCModule(L.LightningModule):
    """Base class. Subclasses build their network and implement ``encode`` and ``forward``.

    Args:
        label_stats: training label statistics (linked from the datamodule by the CLI).
        loss: loss head (normal, PW, PW-cb; BCE or squared hinge).
        optimizer: optimizer factory (LightningCLI dependency injection).
        lr_scheduler: optional scheduler factory, stepped every optimizer step.
        ks: the k of P@k, nDCG@k, PSP@k, PSnDCG@k.
        freq_bins: upper edges of the label-frequency bins for P@k by frequency.
        predict_top_k: labels per document written by ``predict``.
        num_labels: set from ``label_stats``; only given explicitly when restoring a checkpoint.
    """

    def __init__(
        self,
        label_stats: LabelStats | None = None,
        loss: LossHead | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        ks: Sequence[int] = (1, 3, 5),
        freq_bins: Sequence[int] = (5, 20, 100, 500),
        predict_top_k: int = 10,
        num_labels: int | None = None,
    ) -> None:
        super().__init__()
        if label_stats is None and num_labels is None:
            raise ValueError("the model needs label_stats (linked from the datamodule) or num_labels")
        self.num_labels = len(label_stats) if label_stats is not None else int(num_labels)
        if num_labels is not None and num_labels != self.num_labels:
            raise ValueError(f"num_labels={num_labels} but the label statistics have {self.num_labels} labels")
        self.loss = loss if loss is not None else NormalLoss()
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.ks = tuple(ks)
        self.freq_bins = tuple(freq_bins)
        self.predict_top_k = predict_top_k
        self.label_stats: LabelStats | None = None
        self.loss.resize(self.num_labels)
        if label_stats is not None:
            self.attach_label_stats(label_stats)

    def save_xmtc_hparams(self, **derived: Any) -> None:
        """Save init args minus the linked objects, plus the sizes needed to rebuild from a checkpoint."""
        with warnings.catch_warnings():
            # ``loss`` stays a hyperparameter: load_from_checkpoint rebuilds the loss head (PW, PW-cb) from it
            warnings.filterwarnings("ignore", message="Attribute 'loss' is an instance of `nn.Module`")
            self.save_hyperparameters(ignore=["label_stats", "tokenizer"])
        self.hparams.update(num_labels=self.num_labels, **derived)

    def attach_label_stats(self, stats: LabelStats) -> None:
        if len(stats) != self.num_labels:
            raise ValueError(f"label statistics have {len(stats)} labels, the model {self.num_labels}; "
                             "is this checkpoint from another dataset?")
        self.label_stats = stats
        self.loss.bind(stats)
        inv_p = torch.as_tensor(stats.inv_propensity, dtype=torch.float32)
        freqs = torch.as_tensor(stats.freqs)
        self.metrics = torch.nn.ModuleDict({
            stage: XMCMetrics(ks=self.ks, inv_propensity=inv_p) for stage in ("val", "test")})
        self.freq_metrics = torch.nn.ModuleDict({
            stage: PrecisionAtKByFrequency(freqs, self.freq_bins, k=max(self.ks)) for stage in ("val", "test")})

    # -- to implement --

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Tensors the network needs for a list of raw texts (on the CPU)."""

    @abstractmethod
    def forward(self, inputs: dict[str, Tensor], labels: Tensor | None = None) -> Tensor:
        """Logits (B, L), or (B, len(labels)) for only the label indices ``labels``.

        The subset is what makes attacks cheap: their search only needs the target labels' scores
        (a model may compute the full row and index it, but should not when it can avoid the work).
        """

    def scores_from_logits(self, logits: Tensor) -> Tensor:
        """The model's own per-label scores (probabilities for sigmoid outputs); what rankings use."""
        return torch.sigmoid(logits)

    def compute_loss(self, inputs: dict[str, Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        logits = self(inputs)
        return self.loss(logits, targets), logits

    # -- batches: raw texts become tensors here, on the way to the device --

    def on_before_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        if "texts" in batch and "inputs" not in batch:
            batch = {**batch, "inputs": self.encode(batch["texts"])}
        return batch

    def transfer_batch_to_device(self, batch: dict[str, Any], device: torch.device, dataloader_idx: int) -> Any:
        texts = batch.get("texts")
        moved = super().transfer_batch_to_device({k: v for k, v in batch.items() if k != "texts"},
                                                 device, dataloader_idx)
        return {**moved, "texts": texts}

    # -- one step for every stage --

    def _shared_step(self, batch: dict[str, Any], stage: str) -> Tensor:
        loss, logits = self.compute_loss(batch["inputs"], batch["targets"])
        bs = batch["targets"].shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=stage == "train", batch_size=bs, sync_dist=stage != "train")
        if stage != "train":
            scores = self.scores_from_logits(logits.detach())
            self.metrics[stage].update(scores, batch["targets"])
            self.freq_metrics[stage].update(scores, batch["targets"])
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def _log_epoch_metrics(self, stage: str) -> None:
        values = {**self.metrics[stage].compute(), **self.freq_metrics[stage].compute()}
        # compute() already gathered every process's states, so the values agree across processes; sync_dist
        # averages equal numbers (one all-reduce an epoch) and spares a warning per metric under DDP
        self.log(f"{stage}/P@1", values.pop("P@1"), prog_bar=True, sync_dist=True)
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, sync_dist=True)
        self.metrics[stage].reset()
        self.freq_metrics[stage].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        scores = self.scores_from_logits(self(batch["inputs"]))
        top = torch.topk(scores, k=min(self.predict_top_k, self.num_labels), dim=-1)
        return {"index": batch["index"], "labels": top.indices, "scores": top.values}

    # -- raw text in, scores out: the classifier protocol the attack suite uses (xmtc.attack.classifier) --

    @property
    def label_ids(self) -> list[str] | None:
        """The label ids in column order (None before the label statistics are attached)."""
        return None if self.label_stats is None else list(self.label_stats.label_ids)

    def visible_text(self, text: str) -> tuple[str, str]:
        """The leading whitespace words of ``text`` the model reads, and a note on what was cut ("" when
        nothing was); models that truncate override it, so no attack edits text the model never sees."""
        return text, ""

    @torch.no_grad()
    def score_texts(self, texts: Sequence[str], batch_size: int = 64, labels: Sequence[int] | None = None,
                    logits: bool = False) -> Tensor:
        """Scores (len(texts), L) on the CPU, in eval mode, batched; restores the training mode.

        With ``labels`` only those columns, (len(texts), len(labels)), computed without the others where
        the model can (AttentionXML's label-wise attention for 1 label instead of thousands). With
        ``logits`` the log-odds whose sigmoid is the score: attacks compare gains on them, where float32
        probabilities round to 1.0 above a logit of ~16.6.
        """
        was_training = self.training
        if was_training:  # walking every submodule costs ~1 ms, paid on each of an attack's many calls
            self.eval()
        subset = None if labels is None else torch.as_tensor(list(labels), dtype=torch.long, device=self.device)
        if subset is not None and subset.numel() and not bool(((subset >= 0) & (subset < self.num_labels)).all()):
            raise ValueError(f"label indices out of range for {self.num_labels} labels: {list(labels)}")
        try:
            out = []
            for start in range(0, len(texts), batch_size):
                inputs, inverse = _distinct_rows(self.encode(texts[start:start + batch_size]))
                inputs = {k: v.to(self.device) for k, v in inputs.items()}
                out_logits = self(inputs, labels=subset)
                rows = (out_logits if logits else self.scores_from_logits(out_logits)).float().cpu()
                out.append(rows if inverse is None else rows[inverse])
            width = self.num_labels if subset is None else subset.numel()
            return torch.cat(out) if out else torch.zeros(0, width)
        finally:
            if was_training:
                self.train()

    # -- optimisation --

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints carry the label space (and subclasses their tokenizer) --

    def extra_checkpoint_state(self) -> dict[str, Any]:
        """What a subclass keeps in the checkpoint beside the label space (its tokenizer); subclasses extend
        ``super()``'s dict. Stored under the checkpoint's ``"xmtc"`` key."""
        return {}

    def load_extra_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Restore what ``extra_checkpoint_state`` saved (``state``: the checkpoint's ``"xmtc"`` dict, label
        space already attached); subclasses call ``super()`` first."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.label_stats is None:
            raise RuntimeError("cannot checkpoint a model without label statistics")
        checkpoint[_CKPT_KEY] = {"label_stats": _stats_to_state(self.label_stats), **self.extra_checkpoint_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(_CKPT_KEY)
        if state is None:
            raise ValueError("checkpoint has no xmtc label statistics; was it written by xmtc?")
        saved = _stats_from_state(state["label_stats"])
        if self.label_stats is not None and self.label_stats.label_ids != saved.label_ids:
            raise ValueError("the data's label space differs from the checkpoint's: was the checkpoint "
                             "trained on another dataset?")
        self.attach_label_stats(saved)
        self.load_extra_checkpoint_state(state)


def _distinct_rows(inputs: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor | None]:
    """The rows of a batch that differ as model input, and the index that maps them back (None: all do).

    Texts an attack scores often encode alike (candidates the model's vocabulary does not know, case
    variants under a lower-casing tokenizer); each distinct input is run once."""
    tensors = [v.reshape(v.shape[0], -1).cpu().numpy() for v in inputs.values()]
    seen: dict[bytes, int] = {}
    inverse = [seen.setdefault(b"".join(t[i].tobytes() for t in tensors), len(seen)) for i in range(len(tensors[0]))]
    if len(seen) == len(inverse):
        return inputs, None
    first: list[int] = []
    for i, j in enumerate(inverse):
        if j == len(first):  # distinct rows are numbered in order of first appearance
            first.append(i)
    index = torch.tensor(first)
    return {k: v[index.to(v.device)] for k, v in inputs.items()}, torch.tensor(inverse)
