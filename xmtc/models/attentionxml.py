"""AttentionXML (You et al., 2019), flat variant: embedding -> BiLSTM -> label-wise attention -> MLP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

from xmtc.attack.classifier import embedding_gradients, max_per_word, visible_by_words
from xmtc.data.label_stats import LabelStats
from xmtc.data.tokenizer import WordTokenizer, load_word_vectors
from xmtc.errors import UserTypeError
from xmtc.losses import LossHead
from xmtc.models.base import XMTCModule
from xmtc.models.bilstm import bilstm_states, supported


class LabelWiseAttention(nn.Module):
    """One attention distribution over tokens per label: context (B, L, D) = softmax_T(W_l H^T) H.

    Scores are computed directly as (B, L, T) so the softmax runs over the contiguous last axis.
    """

    def __init__(self, hidden: int, num_labels: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.empty(num_labels, hidden))
        nn.init.xavier_uniform_(self.query)

    def forward(self, states: Tensor, mask: Tensor, labels: Tensor | None = None) -> Tensor:
        query = self.query if labels is None else self.query[labels]  # only the labels asked for
        logits = torch.matmul(query, states.transpose(1, 2))  # (B, L, T)
        logits.masked_fill_(~mask.unsqueeze(1), float("-inf"))  # in place: a fresh tensor, not needed by backward
        return torch.softmax(logits, dim=-1) @ states  # (B, L, D)


class AttentionXML(XMTCModule):
    """AttentionXML for up to ~30k labels (the flat model; no label tree).

    Args:
        tokenizer: word vocabulary (linked from the datamodule); saved in the checkpoint.
        label_stats: training label statistics (linked from the datamodule).
        loss: loss head (``xmtc.losses.NormalLoss``, ``PWLoss`` or ``PWCBLoss``).
        embedding_dim: word vector size (300 for GloVe 840B).
        word_vectors: optional GloVe-format text file to initialise the embedding from.
        freeze_embedding: keep the embedding fixed (the paper's Wiki10-31K setting).
        hidden_size: BiLSTM units per direction.
        num_layers: BiLSTM layers.
        linear_sizes: hidden layers of the per-label MLP shared by all labels.
        embedding_dropout: dropout on word vectors.
        dropout: dropout on the BiLSTM states.
        prior_bias: a bias per label on the output, initialised to the best constant score under the loss
            head's weights (the logit of w_j n_j / (w_j n_j + N - n_j)). Not in AttentionXML, whose shared MLP
            has one bias for all labels: there every label's prior must be learned through its attention
            vector, which PW-cb's per-label weights (a 150x spread on EURLEX57K) make slow.
        optimizer, lr_scheduler, ks, freq_bins, predict_top_k: see ``XMTCModule``.
        vocab_size, num_labels: set from the linked objects; given explicitly only on restore.
    """

    def __init__(
        self,
        tokenizer: WordTokenizer | None = None,
        label_stats: LabelStats | None = None,
        loss: LossHead | None = None,
        embedding_dim: int = 300,
        word_vectors: str | None = None,
        freeze_embedding: bool = False,
        hidden_size: int = 256,
        num_layers: int = 1,
        linear_sizes: Sequence[int] = (256,),
        embedding_dropout: float = 0.2,
        dropout: float = 0.5,
        prior_bias: bool = False,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        ks: Sequence[int] = (1, 3, 5),
        freq_bins: Sequence[int] = (5, 20, 100, 500),
        predict_top_k: int = 10,
        vocab_size: int | None = None,
        num_labels: int | None = None,
    ) -> None:
        super().__init__(label_stats=label_stats, loss=loss, optimizer=optimizer, lr_scheduler=lr_scheduler,
                         ks=ks, freq_bins=freq_bins, predict_top_k=predict_top_k, num_labels=num_labels)
        if tokenizer is None and vocab_size is None:
            raise ValueError("AttentionXML needs a tokenizer (linked from the datamodule) or vocab_size")
        if tokenizer is not None and not isinstance(tokenizer, WordTokenizer):
            raise UserTypeError(f"AttentionXML reads words: it needs the datamodule's word tokenizer, got "
                                f"{type(tokenizer).__name__}; remove data.init_args.tokenizer (a subword tokenizer "
                                "is for APLC-XLNet)")
        self.tokenizer = tokenizer
        if tokenizer is not None and vocab_size is not None and vocab_size != len(tokenizer):
            raise ValueError(f"vocab_size={vocab_size} but the tokenizer has {len(tokenizer)} words")
        vocab_size = len(tokenizer) if tokenizer is not None else int(vocab_size)
        self.save_xmtc_hparams(vocab_size=vocab_size)

        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=WordTokenizer.pad_id)
        if word_vectors is not None and tokenizer is not None:
            weight, found = load_word_vectors(word_vectors, tokenizer, embedding_dim)
            self.embedding.weight.data.copy_(weight)
            print(f"word vectors: {found}/{vocab_size} vocabulary words found in {word_vectors}")
        self.embedding.weight.requires_grad_(not freeze_embedding)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers=num_layers, batch_first=True,
                            bidirectional=True)
        self.attention = LabelWiseAttention(2 * hidden_size, self.num_labels)
        self.dropout = nn.Dropout(dropout)  # on the BiLSTM states, as AttentionXML (not on the B x L x D contexts)
        layers: list[nn.Module] = []
        width = 2 * hidden_size
        for size in linear_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        self.label_bias = nn.Parameter(torch.zeros(self.num_labels)) if prior_bias else None
        if self.label_bias is not None and self.label_stats is not None:  # a checkpoint's state overwrites it
            self.label_bias.data.copy_(self.loss.prior_scores(self.label_stats))

    def encode(self, texts: Sequence[str]) -> dict[str, Tensor]:
        if self.tokenizer is None:
            raise RuntimeError("this model has no tokenizer; load it from an xmtc checkpoint")
        ids = [torch.from_numpy(self.tokenizer.encode(t)) for t in texts]
        return {"input_ids": pad_sequence(ids, batch_first=True, padding_value=WordTokenizer.pad_id),
                "lengths": torch.tensor([len(x) for x in ids])}

    def forward(self, inputs: dict[str, Tensor], labels: Tensor | None = None) -> Tensor:
        ids, lengths = inputs["input_ids"], inputs["lengths"]
        x = self.embedding_dropout(self.embedding(ids))
        if not self.training and x.device.type == "cpu" and supported(self.lstm):  # ~2x faster than packed there
            states = bilstm_states(self.lstm, x, lengths)
        else:  # training keeps nn.LSTM's packed path (unpacked, its backward gains only ~1.2x)
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            states, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=ids.shape[1])
        mask = torch.arange(ids.shape[1], device=ids.device) < lengths.to(ids.device).unsqueeze(1)
        context = self.attention(self.dropout(states), mask, labels)  # (B, L, 2H)
        scores = self.mlp(context).squeeze(-1)
        if self.label_bias is not None:
            scores = scores + (self.label_bias if labels is None else self.label_bias[labels])
        return scores

    # -- the classifier protocol (xmtc.attack.classifier): what the model reads, word gradients --

    def _tokenizer(self) -> WordTokenizer:
        if self.tokenizer is None:
            raise RuntimeError("this model has no tokenizer; load it from an xmtc checkpoint")
        return self.tokenizer

    def visible_text(self, text: str) -> tuple[str, str]:
        """The whitespace words whose tokens fall within the first ``max_length`` tokens (a word split
        across the limit is dropped)."""
        return visible_by_words(self._tokenizer(), text)

    def token_gradients(self, text: str, labels: Sequence[int]) -> Tensor:
        """L2 norm (T,) of d(Σ_labels score)/d(embedding of token t) for the tokens of one text, in eval mode
        (frozen embeddings work; no parameter ``.grad`` is touched)."""
        inputs = {k: v.to(self.device) for k, v in self.encode([text]).items()}
        index = torch.as_tensor(list(labels), dtype=torch.long, device=self.device)
        grad = embedding_gradients(self, self.embedding,
                                   lambda: self.scores_from_logits(self(inputs))[0, index].sum())
        return grad[0].norm(dim=-1).double().cpu()

    def word_gradients(self, text: str, labels: Sequence[int]) -> Tensor:
        """float64 (len(text.split()),): per whitespace word the max of its tokens' ``token_gradients``; 0 for
        words without tokens (punctuation) or past ``max_length``. Each word is tokenized on its own: the
        tokenizer's ``\\w+`` never crosses whitespace, so the pieces line up with the tokens of the text."""
        tok = self._tokenizer()
        words = text.split()
        norms = self.token_gradients(" ".join(words), labels)
        counts = torch.tensor([len(tok.words(w)) for w in words], dtype=torch.long)
        total = int(counts.sum())
        if total == 0:  # the model read one unknown token standing for nothing
            return torch.zeros(len(words), dtype=torch.float64)
        if total < norms.numel():
            raise ValueError(f"the model encodes {norms.numel()} tokens but its tokenizer finds {total} in the "
                             "words; word gradients cannot map tokens back to words")
        owner = torch.repeat_interleave(torch.arange(len(words)), counts)[:norms.numel()]
        return max_per_word(norms, owner, len(words))

    # -- the checkpoint carries the tokenizer --

    def extra_checkpoint_state(self) -> dict[str, Any]:
        state = super().extra_checkpoint_state()
        if self.tokenizer is not None:
            state["tokenizer"] = self.tokenizer.state_dict()
        return state

    def load_extra_checkpoint_state(self, state: dict[str, Any]) -> None:
        super().load_extra_checkpoint_state(state)
        tokenizer_state = state.get("tokenizer")
        if tokenizer_state is None:
            raise ValueError("checkpoint has no word tokenizer; it cannot score raw text")
        saved = WordTokenizer.from_state_dict(tokenizer_state)
        if self.tokenizer is not None and self.tokenizer.vocab != saved.vocab:
            raise ValueError("the data's vocabulary differs from the checkpoint's: was the checkpoint "
                             "trained on another dataset or with other tokenizer settings?")
        self.tokenizer = saved
