"""Word insertion: a word put before or after a word of the text, from a masked LM's guess for an inserted mask
token (issue 16; the paper's attack only substitutes, §3).

A negative-targeted attack has to bring words that speak for the target into the text; replacing words takes
as many words out as it puts in, and a masked LM proposes for a slot only what fits its old context.
Insertion adds a word and keeps every original word. Candidates are *insertion slots*
(``xmtc.attack.base.insertion_slot``: the anchor word with the new word beside it), so the search, the
constraints and the oracle handle them as any other candidate: positions in the original text never shift,
each insertion counts as one change against the change budget over the ORIGINAL word count, and a word with
an insertion beside it is never changed again (``Attack.candidates``, ``NoRepeatModification``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Self

import torch

from xmtc.attack.base import INSERTIONS, insertion_slot
from xmtc.attack.stopwords import is_stop_word
from xmtc.attack.transformation import MaskedLMSubstitution, WordSubstitution, split_word

Edit = Literal["replace", "insert_before", "insert_after"]
EDITS: tuple[str, ...] = ("replace", *INSERTIONS)


def check_edits(edits: Sequence[str]) -> list[str]:
    """The edits as a list, each one of ``EDITS`` (named in the error otherwise)."""
    edits = list(edits)
    bad = [e for e in edits if e not in EDITS]
    if bad or not edits:
        raise ValueError(f"edits must be a non-empty list of {EDITS}; got {edits}")
    return edits


def inserted_words(ranked: Sequence[str], neighbour: str, k: int) -> list[str]:
    """The first ``k`` distinct lower-cased words of ``ranked`` that are neither stop words nor the word they
    would stand beside (an inserted word is a new word of the sentence: it takes no case from its neighbour)."""
    own = split_word(neighbour).core.lower()
    out: list[str] = []
    for w in ranked:
        w = w.lower()
        if w != own and w not in out and not is_stop_word(w):
            out.append(w)
            if len(out) == k:
                break
    return out


class MaskedLMHolder(WordSubstitution):
    """A part that asks a masked LM for slots: its own (``masked_lm`` a path) or the run's (``masked_lm`` None:
    ``xmtc.attack.recipe.build_transformation`` attaches the one ``settings.masked_lm`` names)."""

    def __init__(self, masked_lm: str | None, k: int, batch_size: int = 32, device: str = "cpu") -> None:
        super().__init__(k)
        self.masked_lm = masked_lm
        self.batch_size = batch_size
        self.device = device
        self.mlm: MaskedLMSubstitution | None = None
        if masked_lm is not None:
            self.mlm = MaskedLMSubstitution(masked_lm, k=k, mode="masked", batch_size=batch_size, device=device)

    def attach_masked_lm(self, mlm: MaskedLMSubstitution) -> None:
        """Use ``mlm`` (the run's masked LM) where none was named."""
        self.mlm = mlm

    def _masked_lm(self) -> MaskedLMSubstitution:
        if self.mlm is None:
            raise ValueError(f"{type(self).__name__}: no masked LM; give masked_lm=PATH, or run it through "
                             "settings.transformation, where settings.masked_lm is used")
        return self.mlm

    def to(self, device: str | torch.device) -> Self:
        if self.mlm is not None:
            self.mlm.to(device)
        return self

    def clear_cache(self) -> None:
        if self.mlm is not None:
            self.mlm.clear_cache()

    def ranked_words(self, words: Sequence[str], positions: list[int]) -> list[list[str]]:
        """Plain substitutions: the masked LM's words for each masked position."""
        return self._masked_lm().ranked_words(words, positions)


class WordInsertion(MaskedLMHolder):
    """``Transformation`` proposing, per position, up to K masked-LM words for each of ``edits``: ``replace`` (the
    paper's substitution, masked mode), ``insert_before``/``insert_after`` (a mask inserted beside the word;
    the candidates are insertion slots). The default (replace and insert before) is the paper's
    substitutions plus insertions; ``edits: [insert_before]`` inserts only.

    Args:
        masked_lm: the masked LM's path; None: the run's (``settings.masked_lm``).
        k: candidates per edit and position (the paper's K).
        edits: which edits to propose, in this order.
        batch_size, device: the masked LM's, when it is loaded here.
    """

    def __init__(self, masked_lm: str | None = None, k: int = 24, edits: Sequence[Edit] = ("replace", "insert_before"),
                 batch_size: int = 32, device: str = "cpu") -> None:
        super().__init__(masked_lm, k, batch_size, device)
        self.edits = check_edits(edits)

    def candidates(self, words: Sequence[str], positions: Sequence[int]) -> list[list[str]]:
        """Per position: the substitutions (``replace``), then the insertion slots of each side, K of each."""
        out: list[list[str]] = [[] for _ in positions]
        if "replace" in self.edits:
            for row, found in zip(out, super().candidates(words, positions), strict=True):
                row.extend(found)
        todo = [i for i, p in enumerate(positions) if split_word(words[p]).attackable]
        mlm = self._masked_lm()
        for side in (e for e in self.edits if e != "replace"):
            ranked = mlm.ranked_inserted(words, [positions[i] for i in todo], side)
            for i, words_here in zip(todo, ranked, strict=True):
                word = words[positions[i]]
                out[i].extend(insertion_slot(word, w, side) for w in inserted_words(words_here, word, self.k))
        return out

