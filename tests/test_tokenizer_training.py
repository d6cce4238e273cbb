"""The project's offline XLNet-style tokenizer: trained from a dataset directory, loaded, linked by the datamodule."""

from __future__ import annotations

from pathlib import Path

import pytest
from toydata import write_axml

from xmtc.data.datamodule import XMTCDataModule
from xmtc.data.subword import load_subword_tokenizer, same_vocabulary, tokenizer_from_state, tokenizer_state
from xmtc.data.tokenizer import WordTokenizer
from xmtc.data.train_tokenizer import SPECIAL_TOKENS
from xmtc.data.train_tokenizer import main as train_main


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tok")
    data = write_axml(root / "toy", {"train": 120, "test": 20})
    out = train_main(["--data", str(data), "--output", str(root / "tok"), "--vocab-size", "120",
                      "--max-length", "16"])
    return data, out


def test_trained_tokenizer_has_xlnet_layout(trained):
    _, path = trained
    tok = load_subword_tokenizer(str(path))
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(9))  # XLNet's ids
    assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id) == (5, 3, 4)
    enc = tok(["milk", "fishing vessels catch quota sea tax"], padding=True, padding_side="left")
    short, long_ = enc["input_ids"]
    assert short[-2:] == [tok.sep_token_id, tok.cls_token_id] and long_[-2:] == short[-2:]
    assert short[0] == tok.pad_token_id and enc["attention_mask"][0][0] == 0  # padded on the left
    assert tok.model_max_length == 16
    assert len(tok("tax " * 50, truncation=True)["input_ids"]) == 16


def test_tokenizer_round_trips_through_checkpoint_state(trained):
    _, path = trained
    tok = load_subword_tokenizer(str(path))
    again = tokenizer_from_state(tokenizer_state(tok))
    assert same_vocabulary(tok, again)
    assert again("wine grapes")["input_ids"] == tok("wine grapes")["input_ids"]


def test_datamodule_links_a_subword_or_a_word_tokenizer(trained):
    data, path = trained
    dm = XMTCDataModule(str(data), tokenizer=str(path), max_length=12)
    assert not isinstance(dm.tokenizer, WordTokenizer)
    assert dm.vocab_size == len(dm.tokenizer) and dm.tokenizer.model_max_length == 12
    assert isinstance(XMTCDataModule(str(data)).tokenizer, WordTokenizer)


def test_missing_tokenizer_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_tokenizer"):
        load_subword_tokenizer(str(tmp_path / "no-tokenizer"))
