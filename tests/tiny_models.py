"""Builders of tiny real models on local disk, for tests: nothing is downloaded, each builds in seconds.

* ``build_tiny_mlm``: WordPiece tokenizer + 2-layer BertForMaskedLM trained briefly on a repetitive corpus,
  so its masked predictions are meaningful (``MaskedLMSubstitution`` tests).
* ``build_tiny_sentence_transformer``: tiny BERT + mean pooling saved as a sentence-transformers directory.
* ``build_tiny_use_savedmodel``: a TensorFlow SavedModel that, like the Universal Sentence Encoder, maps a
  batch of strings to (N, D) vectors (hashed word embeddings, averaged).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

# Slot fillers of the template "the {body} {verb} the {act} on {sector} {object}": few options per slot,
# so a tiny model learns to recover a masked slot word among its top 5.
BODIES = ["council", "commission", "parliament", "committee"]
VERBS = ["adopted", "approved", "rejected", "amended"]
ACTS = ["regulation", "directive", "decision", "proposal"]
SECTORS = ["fishing", "farming", "shipping", "banking"]
OBJECTS = ["quotas", "subsidies", "rules", "standards"]
# Filler vocabulary of a second template whose slots are unpredictable: it widens the vocabulary (so a
# random model's top 5 is a small share of it) without making the first template ambiguous.
_FILLER_WORDS = (
    "report annex article budget citizen court customs dairy energy export farmer fleet freight grain "
    "harbour import industry inspection invoice label licence market member milk network office pension "
    "permit price product railway region research safety sector service statistics subsidy supplier "
    "tariff tax trade transport treaty union vessel water wine worker agency audit bank border capital "
    "carbon climate competition consumer contract credit data debt deficit defence employment "
    "environment equity exchange health housing insurance investment justice labour land loan mineral "
    "money patent police postal power property quality rescue salary school security shares social steel "
    "storage tourism training waste"
)
FILLERS = _FILLER_WORDS.split()


def template_corpus(n: int = 200, seed: int = 0, fillers: int = 200) -> list[str]:
    """``n`` sentences of the predictable template plus ``fillers`` sentences of unpredictable filler words.

    Some template sentences are capitalised ("The Council ...") and some end with a full stop, so the
    tokenizer knows capitals and punctuation."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        body = rng.choice(BODIES)
        the, body = ("The", body.title()) if rng.random() < 0.25 else ("the", body)
        stop = "." if rng.random() < 0.5 else ""
        act = f"the {rng.choice(ACTS)} on {rng.choice(SECTORS)} {rng.choice(OBJECTS)}{stop}"
        texts.append(f"{the} {body} {rng.choice(VERBS)} {act}")
    texts += [f"the report mentions {rng.choice(FILLERS)} and {rng.choice(FILLERS)}" for _ in range(fillers)]
    return texts


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: on a small busy machine two threads are ~10x slower for tiny models."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_tokenizer(corpus: list[str], vocab_size: int):
    from xmtc.attack.mlm import train_wordpiece_tokenizer

    return train_wordpiece_tokenizer(corpus, vocab_size, max_length=128)


def _tiny_bert_config(vocab_size: int):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )


def build_tiny_mlm(
    path: str | Path,
    corpus: list[str] | None = None,
    steps: int = 100,
    seed: int = 0,
    vocab_size: int = 400,
) -> Path:
    """The project's masked-LM trainer (``xmtc.attack.mlm``) at toy size: WordPiece tokenizer and a 2-layer
    BertForMaskedLM trained ``steps`` steps on ``corpus`` (``steps=0`` keeps the random initialisation)."""
    from xmtc.attack.mlm import train_masked_lm

    with single_thread():
        return train_masked_lm(corpus if corpus is not None else template_corpus(), path, vocab_size=vocab_size,
                               hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=128,
                               steps=steps, batch_size=32, lr=1e-2, mask_probability=0.25, seed=seed,
                               show_progress=False)


def build_tiny_sentence_transformer(path: str | Path, corpus: list[str] | None = None, seed: int = 0) -> Path:
    """A randomly initialised tiny BERT + mean pooling, saved as a sentence-transformers model directory at
    ``path``; ``SentenceTransformer(str(path))`` loads it offline."""
    import tempfile

    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertModel

    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer

    path = Path(path)
    corpus = corpus if corpus is not None else template_corpus()
    tokenizer = _train_tokenizer(corpus, 400)
    torch.manual_seed(seed)
    bert = BertModel(_tiny_bert_config(len(tokenizer)))
    with tempfile.TemporaryDirectory() as bert_dir:  # the saved sentence-transformers model holds its own copy
        tokenizer.save_pretrained(bert_dir)
        bert.save_pretrained(bert_dir)
        transformer = Transformer(bert_dir, max_seq_length=128)
        if hasattr(transformer, "get_embedding_dimension"):  # sentence-transformers >= 6
            dim = transformer.get_embedding_dimension()
        else:
            dim = transformer.get_word_embedding_dimension()
        SentenceTransformer(modules=[transformer, Pooling(dim, "mean")], device="cpu").save(str(path))
    return path


def build_tiny_use_savedmodel(path: str | Path, buckets: int = 64, dim: int = 16, seed: int = 0) -> Path:
    """A USE-like SavedModel: lower-case, split on spaces, hash words into ``buckets`` embeddings of size
    ``dim``, average them (so texts sharing words get similar vectors). Called on a [None] string tensor."""
    import tensorflow as tf

    class TinyUSE(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = tf.Variable(tf.random.stateless_normal((buckets, dim), seed=(seed, 0)))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, texts):
            words = tf.strings.split(tf.strings.lower(texts))
            ids = tf.strings.to_hash_bucket_fast(words, buckets)
            vectors = tf.ragged.map_flat_values(tf.gather, self.table, ids)
            total = tf.reduce_sum(vectors, axis=1)
            count = tf.cast(tf.maximum(ids.row_lengths(), 1), tf.float32)
            return total / count[:, None]

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(TinyUSE(), str(path))
    return path


def corpus_wordpiece(texts: Sequence[str], folder: Path, max_length: int = 64):
    """A cased BERT WordPiece tokenizer whose vocabulary is the corpus's words and characters (a word
    outside it is split into characters), in sorted order. Not trained with ``tokenizers``' WordPiece
    trainer: its vocabulary changes from one process to the next (hash-map order on ties), and with it
    the model trained here and the attack's decisions."""
    import inspect

    from transformers import BertTokenizerFast

    words = sorted({w for t in texts for w in t.split()})
    chars = sorted({c for w in words for c in w})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars), *words]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers >= 5
        return BertTokenizerFast(vocab=vocab, do_lower_case=False, model_max_length=max_length)
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    return BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=False, model_max_length=max_length)


def build_tiny_hf_classifier(path: str | Path, texts: list[str], labels: list[list[str]]) -> Path:
    """A 1-layer BertForSequenceClassification (multilabel) with a WordPiece tokenizer of the toy corpus,
    trained until it predicts the labels, saved with save_pretrained in ``path``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    names = sorted({name for y in labels for name in y})
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = corpus_wordpiece(texts, path)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=len(names),
                        problem_type="multi_label_classification", id2label=dict(enumerate(names)),
                        label2id={n: i for i, n in enumerate(names)})
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    targets = torch.tensor([[float(n in y) for n in names] for y in labels])
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    with single_thread():
        for step in range(200):
            rows = torch.arange(step * 32, step * 32 + 32) % len(texts)
            loss = model(**{k: v[rows] for k, v in enc.items()}, labels=targets[rows]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
