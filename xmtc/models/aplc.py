"""APLC-XLNet (Ye et al., 2020): XLNet, a sequence summary, and adaptive probabilistic label clusters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from xmtc.attack.classifier import visible_by_offsets
from xmtc.data.label_stats import LabelStats
from xmtc.data.subword import same_vocabulary, tokenizer_from_state, tokenizer_state
from xmtc.errors import UserTypeError
from xmtc.losses import LossHead
from xmtc.model_paths import XLNET_ENCODER, check_model_path, hub_offline, load_error, no_loading_bar
from xmtc.models.aplc_head import APLCHead, TailLoss
from xmtc.models.base import XMTCModule


def build_xlnet(encoder: str, encoder_config: dict[str, Any] | None, saved_config: dict[str, Any] | None,
                vocab_size: int | None) -> nn.Module:
    """XLNetModel: from a checkpoint's saved config (weights follow from its state dict), from a config for
    small randomly initialised models, or ``from_pretrained(encoder)`` (a hub name or a local directory)."""
    from transformers import XLNetConfig, XLNetModel

    if saved_config is not None:
        return XLNetModel(XLNetConfig(**saved_config))
    if encoder_config is not None:
        return XLNetModel(XLNetConfig(**{**({"vocab_size": vocab_size} if vocab_size else {}), **encoder_config}))
    name = check_model_path(encoder, XLNET_ENCODER)  # a missing local folder: no hub lookup
    try:
        with no_loading_bar():
            return XLNetModel.from_pretrained(name, local_files_only=hub_offline())
    except (OSError, ValueError) as e:
        raise load_error(XLNET_ENCODER, encoder, e) from e


class APLCXLNet(XMTCModule):
    """XLNet -> summary of the last token (Linear, tanh, dropout) -> APLC head (``xmtc.models.aplc_head``).

    XLNet reads left-padded inputs ending in ``<sep> <cls>``; the summary takes the last position. Scores
    are APLC's probabilities; ``forward`` returns their logits, so metrics, ``predict`` and the attack suite
    treat the model like any sigmoid model. Training never builds the (B, L) output: tail clusters are
    computed only for the rows with a positive in them.

    Args:
        tokenizer: subword tokenizer (linked from the datamodule: ``data.init_args.tokenizer``); saved in
            the checkpoint.
        label_stats: training label statistics (linked from the datamodule), most frequent label first.
        loss: loss head (``NormalLoss``, ``PWLoss``, ``PWCBLoss``); its weights are normalised per cluster.
        encoder: hub name or local directory of a pretrained XLNet (``xlnet-base-cased``).
        encoder_config: ``XLNetConfig`` fields for a randomly initialised XLNet instead (small models for
            the demo and tests); ``vocab_size`` defaults to the tokenizer's.
        summary_size: output size of the summary layer (default: XLNet's ``d_model``).
        summary_dropout: dropout after the summary's tanh.
        summary_pooling: what the summary reads: ``last`` (XLNet's ``<cls>`` position, as APLC-XLNet) or
            ``mean`` (the mean over the real tokens: a small encoder trained from scratch learns far more
            slowly to gather a document into one position).
        cutoffs: APLC cluster boundaries: label counts (``[15469]``) or fractions of the labels (``[0.5]``).
        div_value: tail cluster i projects to ``summary_size / div_value^(i+1)`` first.
        head_bias: bias on the APLC head layer.
        prior_bias: biases on the head layer and the tail clusters' output layers, initialised to the
            training label prior (``APLCHead.init_label_prior``). Not in APLC-XLNet; an encoder trained
            from scratch needs it: without it Adam spends the first ~1,000 steps moving every label's
            score down at the same pace, and meanwhile the encoder's output collapses to one vector for
            all documents (docs/aplc.md).
        tail_loss: ``joint`` (APLC-XLNet's loss) or ``conditional`` (see ``xmtc.models.aplc_head``).
        max_positives: most positive labels a document may have (APLC-XLNet's ``pos_label``); a batch
            with more stops with an error naming the document. ``None``: no limit.
        lr_encoder, lr_summary, lr_head: learning rates of XLNet, the summary and the APLC head.
        weight_decay: decoupled weight decay (none on biases and LayerNorm weights).
        warmup: linear warmup, in optimizer steps (>= 1) or as a fraction of all steps (< 1); then linear
            decay to 0 (``transformers.get_linear_schedule_with_warmup``), unless ``lr_scheduler`` is given.
        optimizer: optimizer factory, called with the six parameter groups (default AdamW).
        lr_scheduler, ks, freq_bins, predict_top_k: see ``XMTCModule``.
        vocab_size, num_labels, xlnet_config: set from the linked objects / saved on checkpointing.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None = None,
        label_stats: LabelStats | None = None,
        loss: LossHead | None = None,
        encoder: str = "xlnet-base-cased",
        encoder_config: dict[str, Any] | None = None,
        summary_size: int | None = None,
        summary_dropout: float = 0.1,
        summary_pooling: Literal["last", "mean"] = "last",
        cutoffs: Sequence[float] = (0.5,),
        div_value: float = 2.0,
        head_bias: bool = False,
        prior_bias: bool = False,
        tail_loss: TailLoss = "joint",
        max_positives: int | None = None,
        lr_encoder: float = 1e-5,
        lr_summary: float = 1e-4,
        lr_head: float = 1e-3,
        weight_decay: float = 0.0,
        warmup: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        ks: Sequence[int] = (1, 3, 5),
        freq_bins: Sequence[int] = (5, 20, 100, 500),
        predict_top_k: int = 10,
        vocab_size: int | None = None,
        num_labels: int | None = None,
        xlnet_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(label_stats=label_stats, loss=loss, optimizer=optimizer, lr_scheduler=lr_scheduler,
                         ks=ks, freq_bins=freq_bins, predict_top_k=predict_top_k, num_labels=num_labels)
        if tokenizer is not None and not isinstance(tokenizer, PreTrainedTokenizerBase):
            raise UserTypeError(f"APLC-XLNet needs a subword tokenizer, got {type(tokenizer).__name__}: set "
                                "data.init_args.tokenizer to xlnet-base-cased or to a directory made by "
                                "`python -m xmtc.data.train_tokenizer`")
        if tokenizer is None and xlnet_config is None and encoder_config is not None and vocab_size is None:
            raise ValueError("a randomly initialised XLNet needs a tokenizer (linked from the datamodule) or "
                             "vocab_size")
        self.tokenizer = tokenizer
        n_tokens = len(tokenizer) if tokenizer is not None else vocab_size
        self.encoder = build_xlnet(encoder, encoder_config, xlnet_config, n_tokens)
        d_model = self.encoder.config.d_model
        if n_tokens is not None and n_tokens > self.encoder.config.vocab_size:
            raise ValueError(f"the tokenizer has {n_tokens} tokens but the XLNet encoder only "
                             f"{self.encoder.config.vocab_size} embeddings: is it the encoder's own tokenizer?")
        self.save_xmtc_hparams(vocab_size=n_tokens, xlnet_config=self.encoder.config.to_dict())
        if summary_pooling not in ("last", "mean"):
            raise ValueError(f"summary_pooling must be 'last' or 'mean'; got {summary_pooling!r}")
        self.summary_pooling = summary_pooling
        width = summary_size or d_model
        self.summary = nn.Sequential(nn.Linear(d_model, width), nn.Tanh(), nn.Dropout(summary_dropout))
        self.head = APLCHead(width, self.num_labels, cutoffs=cutoffs, div_value=div_value, head_bias=head_bias,
                             tail_loss=tail_loss, label_bias=prior_bias)
        if self.head.tail_loss == "joint" and self.loss.surrogate != "bce":
            raise ValueError("tail_loss='joint' trains probabilities with cross-entropy; use the bce surrogate or "
                             "tail_loss='conditional' with squared hinge")
        self.max_positives = max_positives
        if self.label_stats is not None:  # the base class bound the weights before the head existed
            self.attach_label_stats(self.label_stats)
        if prior_bias and self.label_stats is not None:  # a restored checkpoint overwrites it with its weights
            self.head.init_label_prior(self.label_stats.freqs, self.label_stats.num_train_docs,
                                       self.loss.weights().double().cpu().numpy())

    # -- label statistics: loss weights normalised within the head shortlist and within each cluster --

    def attach_label_stats(self, stats: LabelStats) -> None:
        super().attach_label_stats(stats)
        if "head" in self._modules:
            self.loss.bind(stats, groups=self.head.bounds)

    # -- text in, logits out --

    def encode(self, texts: Sequence[str]) -> dict[str, Tensor]:
        if self.tokenizer is None:
            raise RuntimeError("this model has no tokenizer; load it from an xmtc checkpoint")
        enc = self.tokenizer(list(texts), padding=True, truncation=True, padding_side="left", return_tensors="pt")
        return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}

    def summarise(self, inputs: dict[str, Tensor]) -> Tensor:
        """(B, summary_size): the summary of XLNet's last position (``<cls>``, thanks to left padding), or of
        the mean over the real tokens."""
        mask = inputs.get("attention_mask")
        states = self.encoder(input_ids=inputs["input_ids"], attention_mask=mask,
                              token_type_ids=inputs.get("token_type_ids"), use_mems=False).last_hidden_state
        if self.summary_pooling == "last":
            return self.summary(states[:, -1])
        weight = (torch.ones_like(inputs["input_ids"]) if mask is None else mask).to(states.dtype).unsqueeze(-1)
        return self.summary((states * weight).sum(1) / weight.sum(1).clamp(min=1.0))

    def forward(self, inputs: dict[str, Tensor], labels: Tensor | None = None) -> Tensor:
        return self.head(self.summarise(inputs), labels)

    def compute_loss(self, inputs: dict[str, Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        """APLC loss; the full (B, L) logits only outside training (metrics), else an empty (B, 0) stand-in."""
        hidden = self.summarise(inputs)
        loss = self.head.loss(hidden, targets, self.loss)
        if self.training:
            return loss, hidden.new_zeros(hidden.shape[0], 0)
        with torch.no_grad():
            return loss, self.head(hidden)

    def on_before_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        batch = super().on_before_batch_transfer(batch, dataloader_idx)
        targets = batch.get("targets")
        if self.max_positives is not None and targets is not None:  # on the CPU: no device sync
            counts = targets.sum(dim=1)
            if bool((counts > self.max_positives).any()):
                row = int(counts.argmax())
                raise ValueError(f"document {int(batch['index'][row])} of this split has {int(counts[row])} positive "
                                 f"labels, more than model.init_args.max_positives={self.max_positives}; raise it "
                                 "if the data is right")
        return batch

    # -- optimisation: three learning rates, linear warmup and decay --

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        no_decay = {id(p) for m in self.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
        groups = []
        for module, lr in ((self.encoder, hp.lr_encoder), (self.summary, hp.lr_summary), (self.head, hp.lr_head)):
            params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
            plain = [p for n, p in params if "bias" in n or id(p) in no_decay]
            decayed = [p for n, p in params if not ("bias" in n or id(p) in no_decay)]
            groups += [{"params": decayed, "lr": lr, "weight_decay": hp.weight_decay},
                       {"params": plain, "lr": lr, "weight_decay": 0.0}]
        optimizer = self.optimizer_factory([g for g in groups if g["params"]])
        if self.scheduler_factory is not None:
            scheduler = self.scheduler_factory(optimizer)
        else:
            from transformers import get_linear_schedule_with_warmup

            total = int(self.trainer.estimated_stepping_batches)
            warmup = int(hp.warmup * total) if hp.warmup < 1 else int(hp.warmup)
            scheduler = get_linear_schedule_with_warmup(optimizer, warmup, max(total, 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- the classifier protocol (xmtc.attack.classifier): what the model reads --

    def visible_text(self, text: str) -> tuple[str, str]:
        """The whitespace words wholly inside the span ``encode``'s truncated encoding covers (the
        tokenizer's ``model_max_length`` tokens, specials included)."""
        if self.tokenizer is None:
            raise RuntimeError("this model has no tokenizer; load it from an xmtc checkpoint")
        limit = getattr(self.tokenizer, "model_max_length", None)
        if not self.tokenizer.is_fast or not limit:
            return text, ""
        return visible_by_offsets(self.tokenizer, text, int(limit))

    # -- the checkpoint carries the tokenizer --

    def extra_checkpoint_state(self) -> dict[str, Any]:
        state = super().extra_checkpoint_state()
        if self.tokenizer is not None:
            state["subword_tokenizer"] = tokenizer_state(self.tokenizer)
        return state

    def load_extra_checkpoint_state(self, state: dict[str, Any]) -> None:
        super().load_extra_checkpoint_state(state)
        if state.get("subword_tokenizer") is None:
            raise ValueError("checkpoint has no subword tokenizer; it cannot score raw text (was it written by "
                             "APLCXLNet?)")
        saved = tokenizer_from_state(state["subword_tokenizer"])
        if self.tokenizer is not None and not same_vocabulary(self.tokenizer, saved):
            raise ValueError("the tokenizer given (data.init_args.tokenizer) does not match the checkpoint's: its "
                             "vocabulary differs, so token ids would mean other tokens; use the tokenizer the "
                             "model was trained with, or leave it out and the checkpoint's own is used")
        self.tokenizer = saved
