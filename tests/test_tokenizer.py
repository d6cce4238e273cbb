from __future__ import annotations

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
