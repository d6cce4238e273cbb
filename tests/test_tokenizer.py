from __future__ import annotations

import re

import pytest
import torch

from xmtc.data.tokenizer import PAD, UNK, WordTokenizer, load_word_vectors


def test_build_orders_by_frequency_and_round_trips():
    tok = WordTokenizer.build(["Tax tax duty", "duty tax fish"], min_freq=2, max_length=3)
    assert tok.vocab == [PAD, UNK, "tax", "duty"]
    assert tok.encode("TAX fish duty tax").tolist() == [2, 1, 3]  # truncated to max_length, fish unknown
    assert tok.encode("").tolist() == [tok.unk_id]  # never an empty sequence
    again = WordTokenizer.from_state_dict(tok.state_dict())
    assert again.vocab == tok.vocab and again.max_length == 3


def test_vocabulary_must_start_with_specials():
    with pytest.raises(ValueError, match="must start"):
        WordTokenizer(["a", "b"])


def test_glove_file_initialises_known_words(tmp_path):
    tok = WordTokenizer.build(["fish milk tax"])
    path = tmp_path / "vectors.txt"
    path.write_text("fish 1 2 3\nFish 9 9 9\nzebra 4 5 6\n", encoding="utf-8")
    weight, found = load_word_vectors(path, tok, dim=3)
    assert found == 1
    assert weight[tok.index["fish"]].tolist() == [1.0, 2.0, 3.0]  # first spelling wins
    assert torch.all(weight[tok.pad_id] == 0)
    bad = tmp_path / "bad.txt"
    bad.write_text("fish 1 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected a word and 3 numbers"):
        load_word_vectors(bad, tok, dim=3)


def test_attentionxml_initialises_and_can_freeze_embeddings_from_glove(tmp_path):
    import numpy as np

    from xmtc.data.label_stats import LabelStats
    from xmtc.models import AttentionXML

    tok = WordTokenizer.build(["fish milk tax"])
    path = tmp_path / "glove.txt"
    path.write_text("fish 0.5 -1 2 0\n", encoding="utf-8")
    stats = LabelStats(["a", "b"], ["a", "b"], np.array([3, 1]), 4, 0.55, 1.5)
    model = AttentionXML(tokenizer=tok, label_stats=stats, embedding_dim=4, hidden_size=4, linear_sizes=[4],
                         word_vectors=str(path), freeze_embedding=True)
    assert model.embedding.weight[tok.index["fish"]].tolist() == [0.5, -1.0, 2.0, 0.0]
    assert not model.embedding.weight.requires_grad


def test_memoised_encode_equals_looking_up_every_regex_word():
    texts = ["Council Regulation (EEC) No 1234/90 of 3 June 1990", "ΟΔΟΣ Straße naïve-café...x  y\tz\nq",
             "a-b-c a-b-c A-B-C", "", "   ", "! ? ! ? ! ? ! ? ! ? ok fine then more words here", "!!! ???",
             "word " * 30]
    tok = WordTokenizer.build(texts, max_length=7)

    def plain(text: str) -> list[int]:  # the definition: ids of the \w+ words of the lower-cased text
        ids = [tok.index.get(w, tok.unk_id) for w in re.findall(r"\w+", text.lower())][:7]
        return ids or [tok.unk_id]

    for _ in range(2):  # the second round reads the memo
        for text in texts:
            assert tok.encode(text).tolist() == plain(text), text
