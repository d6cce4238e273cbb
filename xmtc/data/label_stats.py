"""Label statistics of the training split: frequencies, inverse propensities, class-balanced factors.

Computed from the training split only and handed to the model through LightningCLI argument linking;
the model stores them as buffers, so a checkpoint carries the exact statistics it was trained with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

PropensityPreset = Literal["default", "wiki", "amazon"]

#: (A, B) of Jain et al. (2016); see NOTES §3. Dataset-specific values are debated, so they are config.
PROPENSITY_PRESETS: dict[str, tuple[float, float]] = {
    "default": (0.55, 1.5),
    "wiki": (0.5, 0.4),
    "amazon": (0.6, 2.6),
}


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
