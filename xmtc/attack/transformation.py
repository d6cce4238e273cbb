"""Word substitutions: the word surface shared by all of them, and candidates from a masked language model
(paper §3, eq. 3.4; bert-base-cased there).

Texts are lists of whitespace-separated words (see ``xmtc.attack.base``). A word may carry punctuation
(``"quotas."``, ``"(fishing"``): only its *core* (the part between the first and the last letter/digit) is
replaced, the surrounding punctuation is carried over to every candidate, so the attacked text keeps its
punctuation. Words whose core has no letter, and stop words, get no candidates. ``WordSubstitution`` does
this surface work once for every source of replacement words; a subclass only ranks raw words for the cores
(``MaskedLMSubstitution`` here, ``xmtc.attack.word_vectors.WordVectorNeighbours`` from word vectors).

Two ways of asking the masked LM (docs/attack.md):

* ``mode="masked"`` (paper Algorithm 1): the word is replaced by ONE mask token and the model predicts that
  slot; one masked copy of the text per requested position, ``batch_size`` copies per forward pass.
* ``mode="unmasked"`` (reference code / BERT-Attack shortcut): one forward pass over the unmasked text, the
  predictions are read at each word's first sub-token; the pass is cached per text, so several positions
  of the same text cost one pass.

Documents longer than the model's window are cut to a window of ``max_length`` tokens (special tokens
included) roughly centred on the position, so every position of a long document can be handled.
"""

from __future__ import annotations

import bisect
import functools
import math
import random
import re
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Self

import torch
from torch import Tensor

from xmtc.attack.stopwords import is_stop_word
from xmtc.model_paths import MASKED_LM, check_model_path, hub_offline, load_error, no_loading_bar

# A whole word: letters, with single hyphens/apostrophes allowed inside ("long-term", "member's").
_WORD_RE = re.compile(r"^[^\W\d_]+(?:['-][^\W\d_]+)*$")
_TEXT_CACHE_SIZE = 8


@dataclass(frozen=True)
class _Word:
    """A whitespace word split into punctuation prefix, core and punctuation suffix."""

    prefix: str
    core: str
    suffix: str

    @property
    def attackable(self) -> bool:
        return any(ch.isalpha() for ch in self.core) and not is_stop_word(self.core)


@dataclass
class _UnmaskedText:
    """What the unmasked passes over one text left: windows (token ranges), the encoder's states over each
    (special tokens included; with a separable LM head) and ranked candidate ids per position."""

    windows: list[tuple[int, int]] = field(default_factory=list)
    states: list[Tensor] = field(default_factory=list)
    ranked: dict[int, Tensor] = field(default_factory=dict)


@functools.lru_cache(maxsize=1 << 16)  # every new text version splits all its words again
def split_word(word: str) -> _Word:
    """Split off leading/trailing characters that are neither letters nor digits."""
    start, end = 0, len(word)
    while start < end and not word[start].isalnum():
        start += 1
    while end > start and not word[end - 1].isalnum():
        end -= 1
    return _Word(word[:start], word[start:end], word[end:])


def match_case(candidate: str, original: str) -> str:
    """Give ``candidate`` the capitalisation style of ``original``: ALL-CAPS, Title-case or lower-case
    (lower-case originals keep all-caps acronym candidates as they are); mixed styles keep the model's."""
    letters = [ch for ch in original if ch.isalpha()]
    if not letters:
        return candidate
    if len(letters) > 1 and all(ch.isupper() for ch in letters):
        return candidate.upper()
    if letters[0].isupper():
        return candidate[:1].upper() + candidate[1:]
    if all(ch.islower() for ch in letters):
        is_acronym = len(candidate) > 1 and candidate.isupper()
        return candidate if is_acronym else candidate.lower()
    return candidate


def usable_word(word: str) -> bool:
    """Whether a vocabulary entry may be proposed: a whole word of two letters or more, not a stop word."""
    return len(word) >= 2 and _WORD_RE.match(word) is not None and not is_stop_word(word)


class WordSubstitution(ABC):
    """``Transformation`` proposing up to K replacements per word; owns the word surface.

    ``candidates`` checks the positions, skips words that may not be attacked (no letter, stop words), asks
    the subclass once for ranked raw replacement words for the cores of all the other positions
    (``ranked_words``), then case-matches them to the original, drops the original word (case-insensitive)
    and duplicates, keeps K and re-attaches the original's punctuation. Subclasses need not filter for any
    of that, only keep non-words out of their vocabulary (``usable_word``).
    """

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k

    def to(self, device: str | torch.device) -> Self:
        """Move whatever the substitution computes with to ``device`` (so the engine can place it beside
        the attacked model); nothing to move by default."""
        return self

    def clear_cache(self) -> None:
        """Forget cached work (e.g. to time two attack implementations fairly); nothing cached by default."""
        return None

    @abstractmethod
    def ranked_words(self, words: Sequence[str], positions: list[int]) -> list[list[str]]:
        """For each of ``positions`` (distinct, attackable; possibly none), replacement words for the core of
        ``words[position]``, best first, at least ``_pool_size()`` of them where there are that many: the
        surface work drops case variants and the original afterwards. Called once per ``candidates``."""

    def _pool_size(self) -> int:
        """Raw words to ask for: case variants and the original word are dropped afterwards."""
        return 3 * self.k + 10

    def _finish(self, ranked: list[str], word: _Word) -> list[str]:
        """Case-match, drop the original and duplicates, keep K, re-attach punctuation."""
        original = word.core.lower()
        seen: set[str] = set()
        out: list[str] = []
        for cand in ranked:
            cand = match_case(cand, word.core)
            if cand.lower() == original or cand in seen:
                continue
            seen.add(cand)
            out.append(word.prefix + cand + word.suffix)
            if len(out) == self.k:
                break
        return out

    def candidates(self, words: Sequence[str], positions: Sequence[int]) -> list[list[str]]:
        """For each position, up to K replacement candidates for ``words[position]`` in the current text."""
        for p in positions:
            if not 0 <= p < len(words):
                raise IndexError(f"position {p} out of range for a text of {len(words)} words")
        todo = [p for p in dict.fromkeys(positions) if split_word(words[p]).attackable]
        ranked = self.ranked_words(words, todo)  # also when there is nothing to do: per-text caches see it
        found = {p: self._finish(r, split_word(words[p])) for p, r in zip(todo, ranked, strict=True)}
        return [list(found.get(p, [])) for p in positions]


@dataclass
class _Encoded:
    """A text tokenised once: all token ids (no special tokens) and each word's core token span."""

    ids: list[int]
    words: list[_Word]
    spans: list[tuple[int, int]]  # [start, end) token indices of the word's core; start == end: no tokens


class MaskedLMSubstitution(WordSubstitution):
    """``Transformation`` proposing up to K whole-word replacements per position from a masked LM.

    Candidates are whole words of the MLM vocabulary (no sub-word continuation pieces, special tokens,
    non-alphabetic tokens, single letters or stop words), never the original word (case-insensitive), sorted
    by MLM probability, unique, in the capitalisation style of the original word, with its punctuation.

    ``model_name_or_path`` is a local directory or a Hub name (``bert-base-cased`` in the paper), told apart by
    ``xmtc.model_paths``' rule: a missing local folder fails at once, never a hub lookup. With
    ``local_files_only=True`` (or ``HF_HUB_OFFLINE``) a Hub name must already be in the Hugging Face cache.
    """

    def __init__(
        self,
        model_name_or_path: str,
        k: int = 48,
        mode: Literal["masked", "unmasked"] = "masked",
        batch_size: int = 32,
        max_length: int = 512,
        device: str = "cpu",
        local_files_only: bool = False,
    ) -> None:
        from tokenizers import Tokenizer
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        # a missing local folder fails here: transformers would take it for a hub name and retry the network
        name = check_model_path(str(model_name_or_path), MASKED_LM)
        if mode not in ("masked", "unmasked"):
            raise ValueError(f"mode must be 'masked' or 'unmasked', got {mode!r}")
        if k < 1 or batch_size < 1:
            raise ValueError("k and batch_size must be >= 1")
        super().__init__(k)
        self.model_name_or_path = str(model_name_or_path)
        self.mode = mode
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.local_files_only = local_files_only
        local_files_only = local_files_only or hub_offline()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_files_only)
        except (OSError, ValueError) as err:
            raise load_error(MASKED_LM, self.model_name_or_path, err) from err
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(f"{self.model_name_or_path}: a fast (tokenizers-backed) tokenizer is needed for offsets")
        # a private copy of the Rust tokenizer: no padding or truncation left over from other callers
        self._backend = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
        self._backend.no_truncation()
        self._backend.no_padding()
        if self.tokenizer.mask_token_id is None:
            raise ValueError(f"{self.model_name_or_path}: the tokenizer has no mask token")
        try:
            with no_loading_bar():
                self.model = AutoModelForMaskedLM.from_pretrained(name, local_files_only=local_files_only)
        except (OSError, ValueError) as err:
            raise load_error(MASKED_LM, self.model_name_or_path, err) from err
        self.model.to(self.device).eval()
        self.model.requires_grad_(False)
        self.num_forward_passes = 0  # documents cost; the tests count passes with it

        self.max_length = self._effective_max_length(max_length)
        self._prefix_ids, self._suffix_ids = self._special_wrapping()
        self._context_budget = self.max_length - len(self._prefix_ids) - len(self._suffix_ids) - 1
        if self._context_budget < 0:
            raise ValueError(f"max_length={max_length} leaves no room for the word itself")
        self._vocab_words, self._invalid_bias = self._candidate_vocabulary()
        self._num_valid = int(torch.isfinite(self._invalid_bias).sum())
        self._encoded_cache: OrderedDict[tuple[str, ...], _Encoded] = OrderedDict()
        self._unmasked_cache: OrderedDict[tuple[str, ...], _UnmaskedText] = OrderedDict()

    # ------------------------------------------------------------------ set-up

    def _effective_max_length(self, max_length: int) -> int:
        """The window may not exceed what the tokenizer or the position embeddings allow."""
        limits = [max_length]
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and tok_max < 1_000_000:
            limits.append(tok_max)
        pos_max = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(pos_max, int) and pos_max > 0:
            # RoBERTa-style models reserve padding_idx + 1 positions
            offset = 2 if getattr(self.model.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
            limits.append(pos_max - offset)
        return min(limits)

    def _special_wrapping(self) -> tuple[list[int], list[int]]:
        """Special tokens the tokenizer puts before/after a single sequence ([CLS] ... [SEP] for BERT).

        Found by tokenising one word with and without them, which works across transformers 4.x and 5.x."""
        bare = self.tokenizer("word", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("word", add_special_tokens=True)["input_ids"]
        for i in range(len(full) - len(bare) + 1):
            if full[i : i + len(bare)] == bare:
                return list(full[:i]), list(full[i + len(bare) :])
        return [], []

    def _candidate_vocabulary(self) -> tuple[list[str], Tensor]:
        """The word each vocabulary entry stands for, and a bias of 0 for usable whole words, -inf otherwise.

        Word-initial pieces are recognised by the tokenizer's convention: WordPiece marks continuations with
        ``##``; SentencePiece (``▁``) and byte-level BPE (``Ġ``) mark word starts."""
        size = max(len(self.tokenizer), int(self.model.get_output_embeddings().weight.shape[0]))
        ids = list(range(len(self.tokenizer)))
        tokens = [t if isinstance(t, str) else "" for t in self.tokenizer.convert_ids_to_tokens(ids)]
        n = max(len(tokens), 1)
        share = {mark: sum(t.startswith(mark) for t in tokens) / n for mark in ("##", "\u2581", "\u0120")}
        scheme = max(share, key=share.__getitem__) if max(share.values()) > 0.01 else ""
        special = set(self.tokenizer.all_special_ids)
        words = [""] * size
        bias = torch.full((size,), -math.inf)
        for i, tok in enumerate(tokens):
            if i in special:
                continue
            if scheme == "##":
                if tok.startswith("##"):
                    continue
                word = tok
            elif scheme:
                if not tok.startswith(scheme):
                    continue
                word = tok[len(scheme) :]
            else:
                word = tok
            if not usable_word(word):
                continue
            words[i] = word
            bias[i] = 0.0
        return words, bias.to(self.device)

    # ------------------------------------------------------------------ tokenisation

    def _encode(self, words: Sequence[str]) -> _Encoded:
        """Tokenise the joined text once and map each word's core to its tokens via character offsets."""
        key = tuple(words)
        hit = self._encoded_cache.get(key)
        if hit is not None:
            self._encoded_cache.move_to_end(key)
            return hit
        parts = [split_word(w) for w in words]
        text = " ".join(words)
        enc = self._backend.encode(text, add_special_tokens=False)  # the Rust tokenizer: offsets without wrappers
        ids = enc.ids
        starts = [s for s, _ in enc.offsets]
        ends = [e for _, e in enc.offsets]
        spans: list[tuple[int, int]] = []
        char = 0
        for word, part in zip(words, parts, strict=True):
            core_start = char + len(part.prefix)
            core_end = core_start + len(part.core)
            if part.core:
                first = bisect.bisect_right(ends, core_start)
                last = bisect.bisect_left(starts, core_end)  # exclusive
                spans.append((first, max(first, last)))
            else:
                spans.append((0, 0))
            char += len(word) + 1
        encoded = _Encoded(ids, parts, spans)
        self._encoded_cache[key] = encoded
        if len(self._encoded_cache) > _TEXT_CACHE_SIZE:
            self._encoded_cache.popitem(last=False)
        return encoded

    def _window(self, n_tokens: int, start: int, end: int) -> tuple[int, int]:
        """Context [left, right) around the target span [start, end): at most the budget, target centred."""
        budget = self._context_budget
        left = min(start, budget // 2)
        right = min(n_tokens - end, budget - left)
        left = min(start, budget - right)
        return start - left, end + right

    # ------------------------------------------------------------------ model

    def _split_model(self) -> tuple[torch.nn.Module, torch.nn.Module] | None:
        """(encoder, LM head) when the model has them apart (BERT's ``cls``, RoBERTa's ``lm_head``): the head,
        a hidden x vocabulary layer, then runs only where predictions are read."""
        head = getattr(self.model, "cls", None)
        if head is None:
            head = getattr(self.model, "lm_head", None)
        base = getattr(self.model, "base_model", None)
        return (base, head) if head is not None and base is not None and base is not self.model else None

    def _batch_inputs(self, sequences: list[list[int]]) -> tuple[Tensor, Tensor]:
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention[row, : len(seq)] = 1
        return input_ids.to(self.device), attention.to(self.device)

    @torch.inference_mode()
    def _slot_logits(self, sequences: list[list[int]], slots: list[list[int]]) -> list[Tensor]:
        """One forward pass over ``sequences`` (already wrapped in special tokens); vocabulary logits at the
        given slots of each sequence. The LM head runs on the slots only, not on every token."""
        split = self._split_model()
        if split is not None:
            states = self._hidden_states(sequences)
            logits = split[1](torch.cat([h[ss] for h, ss in zip(states, slots, strict=True)]))
        else:
            self.num_forward_passes += 1
            input_ids, attention = self._batch_inputs(sequences)
            rows = torch.tensor([r for r, ss in enumerate(slots) for _ in ss], dtype=torch.long, device=self.device)
            cols = torch.tensor([c for ss in slots for c in ss], dtype=torch.long, device=self.device)
            logits = self.model(input_ids=input_ids, attention_mask=attention).logits[rows, cols]
        return list(logits.float().split([len(ss) for ss in slots]))

    @torch.inference_mode()
    def _hidden_states(self, sequences: list[list[int]]) -> list[Tensor]:
        """One encoder pass over ``sequences``: each one's last hidden states (len, hidden), for the LM head."""
        self.num_forward_passes += 1
        base, _ = self._split_model()  # type: ignore[misc]
        input_ids, attention = self._batch_inputs(sequences)
        hidden = base(input_ids=input_ids, attention_mask=attention).last_hidden_state
        return [h[: len(seq)] for h, seq in zip(hidden, sequences, strict=True)]

    def _ranked_ids(self, logits: Tensor, n: int) -> Tensor:
        """Per row, the vocabulary ids of the ``n`` most probable usable words (highest first), on the CPU."""
        n = min(n, self._num_valid)
        if n <= 0 or logits.numel() == 0:
            return torch.zeros((logits.shape[0], 0), dtype=torch.long)
        return (logits + self._invalid_bias[: logits.shape[-1]]).topk(n, dim=-1).indices.cpu()

    def _words(self, ids: Tensor) -> list[str]:
        return [self._vocab_words[i] for i in ids.tolist()]

    def _logit_words(self, logits: Tensor, n: int) -> list[list[str]]:
        """Per row, the ``n`` most probable usable vocabulary words (highest probability first)."""
        return [self._words(row) for row in self._ranked_ids(logits, n)]

    def _masked_input(self, enc: _Encoded, position: int) -> tuple[list[int], int]:
        """The windowed text with the word's core replaced by ONE mask token, and the mask's index."""
        start, end = enc.spans[position]
        left, right = self._window(len(enc.ids), start, end)
        seq = self._prefix_ids + enc.ids[left:start] + [self.tokenizer.mask_token_id]
        return seq + enc.ids[end:right] + self._suffix_ids, len(seq) - 1

    def _unmasked_input(self, enc: _Encoded, position: int) -> tuple[list[int], int]:
        """The windowed unmasked text around the word's first piece, and that piece's index."""
        first = enc.spans[position][0]
        window = self._window(len(enc.ids), first, first + 1)
        return self._window_ids(enc, window), self._slot(enc, position, window)

    def _single_slot_logits(self, inputs: list[tuple[list[int], int]]) -> Tensor:
        """(len(inputs), vocab) logits, one slot per sequence, ``batch_size`` sequences per forward pass."""
        out = self._batched_slot_logits([seq for seq, _ in inputs], [[slot] for _, slot in inputs])
        return torch.cat(out) if out else torch.zeros((0, 0))

    # ------------------------------------------------------------------ candidates

    def to(self, device: str | torch.device) -> Self:
        """Move the model (and the encoder states cached for unmasked mode) to ``device``."""
        device = torch.device(device)
        if device != self.device:
            self.device = device
            self.model.to(device)
            self._invalid_bias = self._invalid_bias.to(device)
            for state in self._unmasked_cache.values():
                state.states = [h.to(device) for h in state.states]
        return self

    def clear_cache(self) -> None:
        """Forget cached encodings and unmasked passes (e.g. to time two attack implementations fairly)."""
        self._encoded_cache.clear()
        self._unmasked_cache.clear()

    def ranked_words(self, words: Sequence[str], positions: list[int]) -> list[list[str]]:
        """The ``_pool_size()`` most probable whole words for each position's slot; none for a word without
        tokens. Masked mode: the masked copies go ``batch_size`` at a time; unmasked: per-text cached passes."""
        enc = self._encode(words)
        todo = [p for p in positions if enc.spans[p][0] < enc.spans[p][1]]
        if self.mode == "masked":
            logits = self._single_slot_logits([self._masked_input(enc, p) for p in todo])
            found = dict(zip(todo, self._logit_words(logits, self._pool_size()), strict=True))
        else:
            found = self._unmasked(tuple(words), enc, todo)
        return [found.get(p, []) for p in positions]

    def _unmasked(self, key: tuple[str, ...], enc: _Encoded, todo: list[int]) -> dict[int, list[str]]:
        """BERT-Attack shortcut: predictions at each word's first piece from passes over the unmasked text.

        A pass over a window serves every word in it, so a text that fits one window costs one pass however
        many positions are asked for. The encoder's states are cached per text and the LM head (hidden x
        vocabulary) and the vocabulary top-k run only for the positions asked for: a greedy attack asks for
        one or two positions of a text before a kept change makes a new text."""
        state = self._unmasked_cache.get(key)
        if state is None:
            state = _UnmaskedText()
            self._unmasked_cache[key] = state
            if len(self._unmasked_cache) > _TEXT_CACHE_SIZE:
                self._unmasked_cache.popitem(last=False)
        else:
            self._unmasked_cache.move_to_end(key)
        missing = sorted((p for p in todo if p not in state.ranked), key=lambda p: enc.spans[p][0])
        if not missing:
            return self._finished(state, todo)
        # each position is read from the first window that covers its first piece (new windows centred on it)
        windows = list(state.windows)  # the state changes only once everything below has worked
        groups: dict[int, list[int]] = {}  # window index -> the missing positions read from it
        for p in missing:
            first = enc.spans[p][0]
            w = next((i for i, (lo, hi) in enumerate(windows) if lo <= first < hi), None)
            if w is None:
                windows.append(self._window(len(enc.ids), first, first + 1))
                w = len(windows) - 1
            groups.setdefault(w, []).append(p)
        split = self._split_model()
        if split is None:  # no separable head: full logits at the slots asked for, over their windows again
            slots = [[self._slot(enc, p, windows[w]) for p in ps] for w, ps in groups.items()]
            logits = self._batched_slot_logits([self._window_ids(enc, windows[w]) for w in groups], slots)
            row = {p: lg for ps, rows in zip(groups.values(), logits, strict=True)
                   for p, lg in zip(ps, rows, strict=True)}
            states = state.states
        else:
            sequences = [self._window_ids(enc, window) for window in windows[len(state.states):]]
            states = list(state.states)
            for b in range(0, len(sequences), self.batch_size):
                states.extend(self._hidden_states(sequences[b : b + self.batch_size]))
            with torch.inference_mode():
                vectors = {p: states[w][self._slot(enc, p, windows[w])] for w, ps in groups.items() for p in ps}
                row = dict(zip(vectors, split[1](torch.stack(list(vectors.values()))).float(), strict=True))
        ranked = self._ranked_ids(torch.stack([row[p] for p in missing]), self._pool_size())
        state.windows, state.states = windows, states
        for p, ids in zip(missing, ranked, strict=True):
            state.ranked[p] = ids  # vocabulary ids; words are made and finished only when asked for
        return self._finished(state, todo)

    def _window_ids(self, enc: _Encoded, window: tuple[int, int]) -> list[int]:
        return self._prefix_ids + enc.ids[window[0] : window[1]] + self._suffix_ids

    def _slot(self, enc: _Encoded, position: int, window: tuple[int, int]) -> int:
        """Index, in ``_window_ids(enc, window)``, of the word's first piece."""
        return len(self._prefix_ids) + enc.spans[position][0] - window[0]

    def _batched_slot_logits(self, sequences: list[list[int]], slots: list[list[int]]) -> list[Tensor]:
        out: list[Tensor] = []
        for b in range(0, len(sequences), self.batch_size):
            out.extend(self._slot_logits(sequences[b : b + self.batch_size], slots[b : b + self.batch_size]))
        return out

    def _finished(self, state: _UnmaskedText, todo: list[int]) -> dict[int, list[str]]:
        return {p: self._words(state.ranked[p]) for p in todo}

    # ------------------------------------------------------------------ slots: replaced or inserted words

    def _inserted_input(self, enc: _Encoded, position: int, side: str) -> tuple[list[int], int]:
        """The windowed text with ONE mask token inserted before (``insert_before``) or after the word's core,
        and the mask's index: the masked LM's guess of a word put there."""
        start, end = enc.spans[position]
        at = start if side == "insert_before" else end
        left, right = self._window(len(enc.ids), at, at)
        seq = self._prefix_ids + enc.ids[left:at] + [self.tokenizer.mask_token_id]
        return seq + enc.ids[at:right] + self._suffix_ids, len(seq) - 1

    def slot_log_probs(self, words: Sequence[str], slots: Sequence[tuple[int, str]]) -> Tensor:
        """(len(slots), vocabulary) log-probabilities of the masked LM's usable whole words (-inf elsewhere) at
        each slot: (position, ``replace``) masks the word's core, (position, ``insert_before``/``insert_after``)
        inserts a mask beside it. One batched pass per ``batch_size`` slots; rows of words without tokens
        are all -inf."""
        enc = self._encode(words)
        ok = [i for i, (p, _) in enumerate(slots) if enc.spans[p][0] < enc.spans[p][1]]
        inputs = [self._masked_input(enc, slots[i][0]) if slots[i][1] == "replace"
                  else self._inserted_input(enc, *slots[i]) for i in ok]
        out = torch.full((len(slots), len(self._vocab_words)), -math.inf)
        if ok:
            logits = self._single_slot_logits(inputs) + self._invalid_bias[: len(self._vocab_words)]
            out[ok] = torch.log_softmax(logits, dim=-1).cpu()
        return out

    def ranked_inserted(self, words: Sequence[str], positions: Sequence[int], side: str) -> list[list[str]]:
        """For each position, the ``_pool_size()`` most probable whole words for a mask inserted on ``side``."""
        rows = self.slot_log_probs(words, [(p, side) for p in positions])
        n = min(self._pool_size(), self._num_valid)
        return [[self._vocab_words[i] for i in row.topk(n).indices.tolist() if math.isfinite(float(row[i]))]
                for row in rows]

    @functools.cached_property
    def word_ids(self) -> dict[str, int]:
        """Lower-cased usable whole word -> its vocabulary id (the first such entry): where a word from
        elsewhere (a label's words) sits in ``slot_log_probs``."""
        out: dict[str, int] = {}
        for i, w in enumerate(self._vocab_words):
            if w:
                out.setdefault(w.lower(), i)
        return out

    # ------------------------------------------------------------------ quality

    def top_k_recall(
        self,
        texts: Sequence[str],
        k: int,
        sample_positions: int,
        seed: int = 0,
        mode: Literal["masked", "unmasked"] = "masked",
    ) -> float:
        """Share of sampled non-stop-word positions whose original word (lower-cased) is among the model's
        top-``k`` whole-word predictions for that slot: a measure of substitution quality.

        ``sample_positions`` positions are drawn uniformly (seeded) from all attackable words of all texts.
        With ``mode="masked"`` the word is hidden from the model; ``"unmasked"`` measures the BERT-Attack
        shortcut, where the model sees the word it predicts (an upper bound, not a language-model test)."""
        if k < 1:
            raise ValueError("k and sample_positions must be >= 1")
        return self.top_k_recalls(texts, [k], sample_positions, seed, mode)[k]

    def top_k_recalls(
        self,
        texts: Sequence[str],
        ks: Sequence[int],
        sample_positions: int,
        seed: int = 0,
        mode: Literal["masked", "unmasked"] = "masked",
    ) -> dict[int, float]:
        """``top_k_recall`` for every K in ``ks`` from one ranking of the same positions: one pass per position
        instead of one per position and K (a pretrained encoder's passes are the cost of measuring it)."""
        if not ks or min(ks) < 1 or sample_positions < 1:
            raise ValueError("k and sample_positions must be >= 1")
        split = [t.split() for t in texts]
        pool = [(i, p) for i, ws in enumerate(split) for p, w in enumerate(ws) if split_word(w).attackable]
        if not pool:
            raise ValueError("no attackable (non-stop-word) positions in the texts")
        picked = random.Random(seed).sample(pool, min(sample_positions, len(pool)))
        inputs: list[tuple[list[int], int]] = []
        originals: list[str] = []
        for i, p in picked:
            enc = self._encode(split[i])
            if enc.spans[p][0] == enc.spans[p][1]:  # no tokens at all: counted as a miss
                continue
            inputs.append(self._masked_input(enc, p) if mode == "masked" else self._unmasked_input(enc, p))
            originals.append(enc.words[p].core.lower())
        ranked = self._logit_words(self._single_slot_logits(inputs), 3 * max(ks) + 10)
        unique = [list(dict.fromkeys(w.lower() for w in words)) for words in ranked]
        return {k: sum(o in u[:k] for o, u in zip(originals, unique, strict=True)) / len(picked) for k in ks}
