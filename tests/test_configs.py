"""The paper configs are composed: configs/{model}_{dataset}.yaml (a base) plus configs/loss/{normal,pw,pwcb}.yaml,
and each configs/{model}_{dataset}_{loss}.yaml is a thin file that includes its base and sets that loss. The thin
file must resolve to exactly what the pair resolves to, apart from the run name (its own file name)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml
from toydata import REPO

from xmtc.cli import main

CONFIGS = REPO / "configs"
MODELS = ("aplc", "axml")
DATASETS = ("wiki", "amazoncat", "eurlex")
LOSSES = {  # the loss each file name promises (paper eq. 4.6; PW-cb with beta 0.9, Qaraei et al., 2021)
    "normal": ("xmtc.losses.NormalLoss", {}),
    "pw": ("xmtc.losses.PWLoss", {}),
    "pwcb": ("xmtc.losses.PWCBLoss", {"beta": 0.9}),
}
# What each base's header comment states (the published settings of APLC-XLNet / AttentionXML), as resolved keys.
HEADER_VALUES = {
    "aplc_wiki": {"trainer.max_epochs": 6, "data.init_args.max_length": 512, "data.init_args.batch_size": 12,
                  "model.init_args.lr_encoder": 1e-5, "model.init_args.lr_summary": 1e-4,
                  "model.init_args.lr_head": 1e-3, "model.init_args.max_positives": 30,
                  "trainer.precision": "bf16-mixed"},
    "aplc_amazoncat": {"trainer.max_epochs": 8, "data.init_args.max_length": 192, "data.init_args.batch_size": 48,
                       "model.init_args.lr_encoder": 5e-5, "model.init_args.lr_summary": 1e-4,
                       "model.init_args.lr_head": 2e-3, "model.init_args.max_positives": 57,
                       "trainer.precision": "bf16-mixed"},
    "aplc_eurlex": {"trainer.max_epochs": 8, "data.init_args.max_length": 512, "data.init_args.batch_size": 12,
                    "model.init_args.lr_encoder": 5e-5, "model.init_args.lr_summary": 1e-4,
                    "model.init_args.lr_head": 2e-3, "model.init_args.max_positives": 26,
                    "trainer.precision": "bf16-mixed"},
    "axml_wiki": {"model.init_args.hidden_size": 256, "model.init_args.linear_sizes": [256],
                  "model.init_args.dropout": 0.5, "model.init_args.freeze_embedding": True,
                  "data.init_args.batch_size": 40, "trainer.max_epochs": 30, "data.init_args.max_length": 500,
                  "model.init_args.optimizer.init_args.lr": 1e-3,
                  "model.init_args.word_vectors": "data/glove.840B.300d.txt"},
    "axml_amazoncat": {"model.init_args.hidden_size": 512, "model.init_args.linear_sizes": [512, 256],
                       "data.init_args.batch_size": 200, "trainer.max_epochs": 10,
                       "model.init_args.optimizer.init_args.lr": 1e-3,
                       "model.init_args.word_vectors": "data/glove.840B.300d.txt"},
    "axml_eurlex": {"model.init_args.hidden_size": 256, "model.init_args.linear_sizes": [256],
                    "data.init_args.batch_size": 40, "trainer.max_epochs": 30, "data.init_args.max_length": 500,
                    "model.init_args.optimizer.init_args.lr": 1e-3},
}
BASES = [f"{m}_{d}" for m in MODELS for d in DATASETS]
THIN = [(base, loss) for base in BASES for loss in LOSSES]


def _resolved(*configs: Path | str, subcommand: str = "fit") -> dict:
    """The configuration ``python -m xmtc SUBCOMMAND --config ... --print_config`` prints, as a dict."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main([subcommand, *(f"--config={c}" for c in configs), "--print_config"])
    assert exit_info.value.code in (0, None), configs
    return yaml.safe_load(out.getvalue())


def _get(cfg: dict, dotted: str):
    for key in dotted.split("."):
        cfg = cfg[key]
    return cfg


def _run_names(cfg: dict) -> list[tuple[str, str]]:
    return [(lg["class_path"].rsplit(".", 1)[-1], lg["init_args"]["name"]) for lg in cfg["trainer"]["logger"]]


def _renamed(cfg: dict, name: str) -> dict:
    for lg in cfg["trainer"]["logger"]:
        lg["init_args"]["name"] = name
    return cfg


@pytest.mark.parametrize("base, loss", THIN, ids=[f"{b}_{loss}" for b, loss in THIN])
def test_thin_config_is_its_base_plus_the_loss_snippet(base, loss):
    thin = _resolved(CONFIGS / f"{base}_{loss}.yaml")
    pair = _resolved(CONFIGS / f"{base}.yaml", CONFIGS / "loss" / f"{loss}.yaml")
    # the run is named after the file (CSV and W&B), the pair after the base
    assert _run_names(thin) == [("CSVLogger", f"{base}_{loss}"), ("WandbLogger", f"{base}_{loss}")]
    assert _run_names(pair) == [("CSVLogger", base), ("WandbLogger", base)]
    assert _renamed(thin, base) == pair
    # what the names promise: the loss and the base's published settings
    class_path, init_args = LOSSES[loss]
    assert thin["model"]["init_args"]["loss"]["class_path"] == class_path
    assert init_args.items() <= thin["model"]["init_args"]["loss"]["init_args"].items()
    assert thin["model"]["class_path"] == ("xmtc.models.APLCXLNet" if base.startswith("aplc")
                                           else "xmtc.models.AttentionXML")
    for key, value in HEADER_VALUES[base].items():
        assert _get(thin, key) == value, key


@pytest.mark.parametrize("loss", LOSSES)
def test_a_loss_snippet_sets_only_the_loss(loss):
    base = CONFIGS / "axml_eurlex.yaml"
    alone, pair = _resolved(base), _resolved(base, CONFIGS / "loss" / f"{loss}.yaml")
    assert pair["model"]["init_args"].pop("loss")["class_path"] == LOSSES[loss][0]
    assert alone["model"]["init_args"].pop("loss")["class_path"] == "xmtc.losses.NormalLoss"  # the base's own
    assert pair == alone  # the base's model class and every other setting are kept


def test_thin_config_finds_its_base_from_any_directory(tmp_path, monkeypatch):
    """The base is named relative to the thin file, not to the working directory."""
    expected = _resolved(CONFIGS / "aplc_wiki_pwcb.yaml")
    monkeypatch.chdir(tmp_path)
    assert _resolved(CONFIGS / "aplc_wiki_pwcb.yaml") == expected


def test_thin_config_composes_with_attack_settings():
    """docs/attack.md: a training config, then the attack settings, for `python -m xmtc attack`."""
    cfg = _resolved(CONFIGS / "axml_eurlex_pw.yaml", CONFIGS / "attack_paper.yaml", subcommand="attack")
    assert cfg["model"]["init_args"]["loss"]["class_path"] == "xmtc.losses.PWLoss"
    assert cfg["model"]["init_args"]["hidden_size"] == 256


def test_every_paper_config_is_a_base_or_a_thin_file_of_one():
    thin = {f"{base}_{loss}.yaml" for base, loss in THIN}
    bases = {f"{base}.yaml" for base in BASES}
    shipped = {p.name for p in CONFIGS.glob("a*_*.yaml") if not p.name.startswith("attack_")}
    assert shipped == thin | bases
    assert {p.name for p in (CONFIGS / "loss").glob("*.yaml")} == {f"{loss}.yaml" for loss in LOSSES}
    for base, loss in THIN:  # each thin file includes its base first (what follows overrides it)
        first_key = next(line for line in (CONFIGS / f"{base}_{loss}.yaml").read_text().splitlines()
                         if line and not line.startswith("#"))
        assert first_key == f"config: {base}.yaml", (base, loss)
