"""What an attack run attacks: a checkpoint's own class, and a classifier's labels matched to the data's by id."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmtc.attack.classifier import CallableClassifier
from xmtc.attack.targets import ReorderedClassifier, checkpoint_class, label_columns
from xmtc.errors import UserError
from xmtc.models import AttentionXML
from xmtc.models.base import XMTCModule

DATA = ["dairy", "fishery", "wine", "taxation"]


def test_label_columns_match_by_id_in_any_order():
    assert label_columns(DATA, DATA, "m") is None  # the same order: used as it is
    model = ["wine", "dairy", "taxation", "fishery"]
    columns = label_columns(model, DATA, "m")
    assert [model[c] for c in columns] == DATA


@pytest.mark.parametrize(("model", "says"), [
    (None, "m has no label names"),
    (["dairy", "fishery", "wine"], r"1 of the data's labels are not among the model's \(e.g. \['taxation'\]\)"),
    (["dairy", "fishery", "wine", "taxation", "rail"], r"1 of the model's labels are not the data's .*'rail'"),
    (["dairy", "fishery", "wine", "taxation", "wine"], "lists a label id twice"),
])
def test_another_label_space_is_a_user_error(model, says):
    with pytest.raises(UserError, match=says):
        label_columns(model, DATA, "m")


def test_reordered_classifier_gives_the_data_s_columns():
    weights = torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.0, 1.5, -1.0, 2.0]])  # word -> logit per model label

    def logits(texts: list[str]) -> np.ndarray:
        counts = torch.tensor([[t.split().count("milk"), t.split().count("fish")] for t in texts], dtype=torch.float)
        return (counts @ weights - 1.0).numpy()

    model_ids = ["wine", "dairy", "taxation", "fishery"]
    base = CallableClassifier(logits, outputs="logit", label_ids=model_ids)
    reordered = ReorderedClassifier(base, label_columns(model_ids, DATA, "m"), DATA)
    texts = ["milk milk fish", "fish", "nothing here"]
    full = base.score_texts(texts, logits=True)
    want = full[:, [model_ids.index(lab) for lab in DATA]]
    torch.testing.assert_close(reordered.score_texts(texts, logits=True), want)
    torch.testing.assert_close(reordered.score_texts(texts), torch.sigmoid(want))
    torch.testing.assert_close(reordered.score_texts(texts, labels=[3, 0], logits=True), want[:, [3, 0]])
    assert reordered.label_ids == DATA and reordered.visible_text("a b") == ("a b", "")


def test_a_checkpoint_is_restored_as_the_class_it_names(tmp_path):
    named, bare = tmp_path / "named.ckpt", tmp_path / "bare.ckpt"
    torch.save({"hyper_parameters": {"_class_path": "xmtc.models.AttentionXML", "hidden_size": 4}}, named)
    torch.save({"state_dict": {}, "hyper_parameters": {"hidden_size": 4}}, bare)
    assert checkpoint_class(named, fallback=None) is AttentionXML
    assert checkpoint_class(named, fallback=XMTCModule) is AttentionXML  # the checkpoint's own class wins
    assert checkpoint_class(bare, fallback=AttentionXML) is AttentionXML
    with pytest.raises(UserError, match="does not name its model class"):
        checkpoint_class(bare, fallback=None)
    torch.save({"hyper_parameters": {"_class_path": "xmtc.models.NoSuchModel"}}, named)
    with pytest.raises(UserError, match="trained as xmtc.models.NoSuchModel, which cannot be imported"):
        checkpoint_class(named, fallback=None)
