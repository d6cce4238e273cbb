"""Label statistics of the training split: frequencies, inverse propensities, class-balanced factors.

Computed from the training split only and handed to the model through LightningCLI argument linking;
the model stores them as buffers, so a checkpoint carries the exact statistics it was trained with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xmtc.errors import UserError

#: (A, B) of Jain et al. (2016) per dataset, as the Extreme Classification Repository, pyxclib and napkinxc
#: give them and as the PW-loss paper's code (xmc-aalto/PWXMC) runs them: 0.5/0.4 for WikiLSHTC-325K and
#: Wikipedia-500K, 0.6/2.6 for Amazon-670K and Amazon-3M, and 0.55/1.5 for every other dataset, Wiki10-31K,
#: AmazonCat-13K and EURLEX57K included. Named after the datasets, so a config says which convention its
#: PSP@k figures follow; ``default`` is the Repository's value for datasets it does not name.
PROPENSITY_PRESETS: dict[str, tuple[float, float]] = {
    "default": (0.55, 1.5),
    "eurlex57k": (0.55, 1.5),
    "eurlex-4k": (0.55, 1.5),
    "wiki10-31k": (0.55, 1.5),
    "amazoncat-13k": (0.55, 1.5),
    "wikilshtc-325k": (0.5, 0.4),
    "wikipedia-500k": (0.5, 0.4),
    "amazon-670k": (0.6, 2.6),
    "amazon-3m": (0.6, 2.6),
}

#: Earlier preset names, refused with the reason: ``wiki`` and ``amazon`` were applied to Wiki10-31K and
#: AmazonCat-13K, whose published PSP@k figures use 0.55/1.5.
REMOVED_PROPENSITY_PRESETS: dict[str, str] = {
    "wiki": "wikipedia-500k (0.5, 0.4: WikiLSHTC-325K and Wikipedia-500K; Wiki10-31K uses wiki10-31k = 0.55, 1.5)",
    "amazon": "amazon-670k (0.6, 2.6: Amazon-670K and Amazon-3M; AmazonCat-13K uses amazoncat-13k = 0.55, 1.5)",
}


def propensity_preset(name: str, field: str = "data.propensity") -> tuple[float, float]:
    """(A, B) of a preset, or a ValueError that names the field and the presets a user can choose."""
    key = name.lower()
    if key in PROPENSITY_PRESETS:
        return PROPENSITY_PRESETS[key]
    if key in REMOVED_PROPENSITY_PRESETS:
        raise ValueError(f"{field}: the preset {name!r} was removed, it was misapplied to smaller datasets; "
                         f"use {REMOVED_PROPENSITY_PRESETS[key]}")
    raise ValueError(f"{field}: unknown preset {name!r}; use one of {', '.join(PROPENSITY_PRESETS)} or [A, B]")


def inverse_propensity(freqs: np.ndarray, num_docs: int, a: float = 0.55, b: float = 1.5) -> np.ndarray:
    """1/p_j = 1 + C (n_j + B)^-A with C = (ln N - 1)(B + 1)^A (Jain et al., 2016)."""
    c = (math.log(num_docs) - 1.0) * (b + 1.0) ** a
    return 1.0 + c * np.power(freqs.astype(np.float64) + b, -a)


def class_balanced(freqs: np.ndarray, beta: float = 0.9) -> np.ndarray:
    """C_j = (1 - beta) / (1 - beta^n_j) (Cui et al., 2019); 0 for labels never seen in training."""
    n = freqs.astype(np.float64)
    out = np.zeros_like(n)
    seen = n > 0
    out[seen] = (1.0 - beta) / (1.0 - np.power(beta, n[seen]))
    return out


@dataclass(frozen=True)
class LabelStats:
    """Everything the model and losses need to know about the label space."""

    label_ids: list[str]  # label id strings, index = output unit
    label_names: list[str]
    freqs: np.ndarray  # (L,) training documents per label
    num_train_docs: int
    propensity_a: float
    propensity_b: float

    def __len__(self) -> int:
        return len(self.label_ids)

    @property
    def inv_propensity(self) -> np.ndarray:
        return inverse_propensity(self.freqs, self.num_train_docs, self.propensity_a, self.propensity_b)

    def class_balanced(self, beta: float = 0.9) -> np.ndarray:
        return class_balanced(self.freqs, beta)

    def indices_of(self, wanted: Sequence[str], field: str = "settings.labels") -> np.ndarray:
        """Output indices of labels given by id or (case-insensitive) name, sorted and unique.

        An unknown label is a ``UserError`` naming ``field`` and up to five names that contain it."""
        by_id = {lab: i for i, lab in enumerate(self.label_ids)}
        by_name = {name.lower(): i for i, name in enumerate(self.label_names)}
        out = []
        for w in wanted:
            idx = by_id.get(w, by_name.get(w.lower()))
            if idx is None:
                close = [n for n in self.label_names if w.lower() in n.lower()][:5]
                raise UserError(f"{field}: unknown label {w!r}: not a label id or name of the model's label space"
                                + (f"; did you mean {close}?" if close else ""))
            out.append(idx)
        return np.array(sorted(set(out)), dtype=np.int64)
