"""docs/attack.md's worked example (a new constraint class and the YAML that uses it), run as written there."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from test_attack_engine import BIAS, WEIGHTS, DictTransformation, KeywordScorer
from toydata import REPO, write_axml

from xmtc.attack.recipe import AttackSettings, build_search
from xmtc.cli import main

DOC = REPO / "docs" / "attack.md"


def example(name: str) -> str:
    """The code block that follows ``<!-- example: name -->`` in docs/attack.md."""
    found = re.search(rf"<!-- example: {re.escape(name)} -->\s*```\w*\n(.*?)```", DOC.read_text(encoding="utf-8"),
                      re.DOTALL)
    assert found, f"docs/attack.md has no example {name}"
    return found[1]


@pytest.fixture
def parts_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "my_parts.py").write_text(example("my_parts.py"), encoding="utf-8")
    (tmp_path / "my_attack.yaml").write_text(example("my_attack.yaml"), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_parts", raising=False)
    return tmp_path


def test_the_example_constraint_keeps_capitalised_words(parts_on_path: Path) -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--settings", type=AttackSettings, default=AttackSettings())
    parser.add_argument("--config", action="config")
    settings = parser.instantiate(parser.parse_args([f"--config={parts_on_path / 'my_attack.yaml'}"])).settings
    assert [type(c).__name__ for c in settings.constraints] == ["KeepCapitalised"]
    assert type(settings.search).__name__ == "BeamSearch" and settings.search.width == 4
    assert settings.min_similarity == 0.8

    class Identity:  # every candidate text is as similar as can be: only the new constraint decides here
        def encode(self, texts: list[str]) -> torch.Tensor:
            return torch.ones(len(texts), 2)

    settings.max_change_rate = 0.3
    scorer = KeywordScorer(WEIGHTS, BIAS)
    flip = DictTransformation({"fishing": ["angling"], "trout": ["angling"]})
    text = "Trout grandpa enjoys fishing near quiet lake every sunny summer morning"  # label 0 led by Trout
    settings.k = 3
    result = build_search(scorer, flip, settings, encoder=Identity()).attack(text, 0, "positive")
    assert [c.old for c in result.changes] == ["fishing"]  # "Trout" drives label 0 most but is capitalised
    unconstrained = build_search(scorer, flip, AttackSettings(k=3, max_change_rate=0.3)).attack(text, 0, "positive")
    assert unconstrained.changes[0].old == "Trout"


@pytest.mark.slow
def test_the_example_runs_through_the_cli(parts_on_path: Path, tiny_attack_models) -> None:
    data = write_axml(parts_on_path / "toy", {"train": 240, "test": 60})
    common = [f"--config={REPO / 'configs' / 'demo_axml.yaml'}", f"--data.init_args.data_dir={data}",
              f"--trainer.logger.init_args.save_dir={parts_on_path / 'logs'}", "--trainer.enable_progress_bar=false",
              "--trainer.enable_model_summary=false", "--model.init_args.embedding_dim=16",
              "--model.init_args.hidden_size=16", "--model.init_args.linear_sizes=[16]"]
    main(["fit", *common, "--trainer.max_epochs=3"])
    ckpt = next((parts_on_path / "logs").rglob("last.ckpt"))
    mlm, encoder = tiny_attack_models
    out = parts_on_path / "attacks"
    main(["attack", *common, f"--config={REPO / 'configs' / 'attack_demo.yaml'}",
          f"--config={parts_on_path / 'my_attack.yaml'}", f"--ckpt_path={ckpt}", f"--output_dir={out}",
          f"--settings.masked_lm={mlm}", "--settings.candidates=8", f"--settings.encoder_path={encoder}",
          "--settings.min_labels_per_bin=2", "--settings.samples_per_bin=2", "--settings.kinds=[positive]",
          "--settings.k=2", "--show_progress=false"])
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))["settings"]
    assert run["constraints"] == [{"class_path": "my_parts.KeepCapitalised", "init_args": {}}]
    assert run["search"] == {"class_path": "xmtc.attack.search.BeamSearch", "init_args": {"width": 4}}
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows and all(not c["old"][:1].isupper() for r in rows for c in r["changes"])
