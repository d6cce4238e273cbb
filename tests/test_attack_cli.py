"""``python -m xmtc attack`` end to end on a trained toy model, with tiny local MLM and sentence encoder."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from toydata import REPO, write_axml

from xmtc.cli import main, run

TINY_MODEL = [
    "--model.init_args.embedding_dim=16", "--model.init_args.hidden_size=16", "--model.init_args.linear_sizes=[16]",
    "--model.init_args.dropout=0.0", "--model.init_args.embedding_dropout=0.0",
    "--model.init_args.optimizer.init_args.lr=0.02",
]


def _common(data: Path, logs: Path) -> list[str]:
    return [f"--config={REPO / 'configs' / 'demo_axml.yaml'}", f"--data.init_args.data_dir={data}",
            f"--trainer.logger.init_args.save_dir={logs}", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", *TINY_MODEL]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_attack_models):
    root = tmp_path_factory.mktemp("attack")
    data = write_axml(root / "toy", {"train": 240, "test": 60})
    (data / "test_ids.txt").write_text("".join(f"celex-{i:03d}\n" for i in range(60)), encoding="utf-8")
    main(["fit", *_common(data, root / "logs"), "--trainer.max_epochs=6"])
    ckpt = next((root / "logs").rglob("last.ckpt"))
    mlm, encoder = tiny_attack_models
    return root, data, ckpt, mlm, encoder


def _attack(setup, out: Path, *extra: str):
    root, data, ckpt, mlm, encoder = setup
    return main(["attack", *_common(data, root / "logs"), f"--ckpt_path={ckpt}", f"--output_dir={out}",
                 f"--settings.masked_lm={mlm}", "--settings.candidates=8", f"--settings.encoder_path={encoder}",
                 "--settings.min_labels_per_bin=2", "--settings.samples_per_bin=3", "--settings.batch_size=16",
                 "--settings.max_change_rate=0.3", "--settings.k=2", "--show_progress=false", *extra])


def test_attack_writes_results_summary_tables_and_plot_and_resumes(setup, tmp_path):
    out = tmp_path / "run"
    _attack(setup, out, "--settings.kinds=[positive,negative]")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    kinds = {g["kind"]: g for g in summary["groups"]}
    assert set(kinds) == {"positive", "negative"}
    num_bins = len(kinds["positive"]["bins"])
    assert num_bins >= 2
    assert sum(r["kind"] == "positive" for r in rows) == 3 * num_bins  # equal samples per bin
    for key in ("doc_id", "bin", "kind", "target_label", "target_name", "success", "rank_before", "rank_after",
                "changes", "queries", "similarity", "change_rate", "original_text", "adversarial_text",
                "topk_before", "topk_after", "similarity_measure"):
        assert key in rows[0], key
    assert all(r["doc_id"].startswith("celex-") for r in rows)  # the dataset's own ids
    for r in rows:
        if r["kind"] == "positive" and r["status"] != "skipped":
            assert r["rank_before"] <= 2 and (r["rank_after"] > 2) == r["success"]
        if r["kind"] == "negative":
            assert r["rank_before"] > 2 and (r["rank_after"] <= 2) == r["success"]
        words = r["original_text"].split()
        for c in r["changes"]:
            assert words[c["position"]] == c["old"] and r["adversarial_text"].split()[c["position"]] == c["new"]
    assert kinds["positive"]["overall"]["attacked"] == sum(r["kind"] == "positive" for r in rows)
    assert "| positive |" in (out / "tables.md").read_text(encoding="utf-8")
    assert (out / "success_by_frequency_positive.png").stat().st_size > 5000

    # interrupted mid-write: the cut last line is redone, nothing is duplicated or lost
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][:20], encoding="utf-8")
    _attack(setup, out, "--settings.kinds=[positive,negative]")
    again = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    key = lambda r: (r["kind"], r["doc_id"], r["target_index"])  # noqa: E731
    assert sorted(map(key, again)) == sorted(map(key, rows))

    # other arguments into the same directory are refused, naming what changed
    with pytest.raises(ValueError, match="samples_per_bin"):
        _attack(setup, out, "--settings.kinds=[positive,negative]", "--settings.samples_per_bin=2")


def test_unknown_label_and_missing_checkpoint_are_clear_errors(setup, tmp_path):
    with pytest.raises(ValueError, match="unknown label 'no such label'"):
        _attack(setup, tmp_path / "a", "--settings.labels=[no such label]")
    root, data, _, mlm, encoder = setup
    with pytest.raises(FileNotFoundError, match="checkpoint of 'other' not found"):
        main(["attack", *_common(data, root / "logs"), "--compare={other: /nonexistent.ckpt}",
              f"--output_dir={tmp_path / 'b'}", f"--settings.masked_lm={mlm}", "--show_progress=false"])


def test_attack_restricted_to_named_labels(setup, tmp_path):
    out = tmp_path / "fish"
    _attack(setup, out, "--settings.labels=[Fishery (EuroVoc)]", "--settings.min_labels_per_bin=1")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows and {r["target_label"] for r in rows} == {"fishery"}


def test_shipped_attack_configs_parse_with_a_model_config(capsys):
    for config in ("attack_demo.yaml", "attack_paper.yaml"):
        with pytest.raises(SystemExit):
            main(["attack", f"--config={REPO / 'configs' / 'demo_axml.yaml'}", f"--config={REPO / 'configs' / config}",
                  "--print_config"])
        out = capsys.readouterr().out
        assert "masked_lm:" in out and "output_dir: attacks/" in out


def test_attack_builds_no_model_from_the_config(setup, tmp_path, monkeypatch):
    """Only the checkpoint's model is built (an APLC-XLNet config would load an XLNet for nothing), and no word
    vocabulary is built from the training split (the checkpoint carries its own)."""
    from xmtc.data.datamodule import WordTokenizer
    from xmtc.models import AttentionXML

    built = []
    init = AttentionXML.__init__

    @functools.wraps(init)  # the same signature for the parser
    def counted(self, *args, **kwargs):
        built.append(kwargs.get("tokenizer"))
        init(self, *args, **kwargs)

    def no_vocabulary(*args, **kwargs):
        raise AssertionError("a vocabulary was built for the attack")

    monkeypatch.setattr(AttentionXML, "__init__", counted)
    monkeypatch.setattr(WordTokenizer, "build", no_vocabulary)
    _attack(setup, tmp_path / "run", "--settings.samples_per_bin=1")
    assert len(built) == 1 and built[0] is None  # load_from_checkpoint's (its tokenizer comes from the checkpoint)


def test_a_hugging_face_classifier_is_attacked_beside_the_checkpoint(setup, hf_classifier_dir, tmp_path,
                                                                     capsys):
    from xmtc.attack.targets import label_columns
    from xmtc.data.datamodule import XMTCDataModule

    root, data, ckpt, mlm, encoder = setup
    model_ids = json.loads((hf_classifier_dir / "config.json").read_text(encoding="utf-8"))["id2label"]
    data_ids = XMTCDataModule(str(data)).label_stats.label_ids
    assert label_columns([model_ids[str(i)] for i in range(len(model_ids))], data_ids, "m") is not None  # reordered
    out = tmp_path / "both"
    _attack(setup, out, f"--hf_model={hf_classifier_dir}")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    by_model = {m: [r for r in rows if r["model"] == m] for m in ("normal", "toy-bert")}
    pairs = {m: [(r["kind"], r["doc_id"], r["target_label"]) for r in rs] for m, rs in by_model.items()}
    assert len(pairs["normal"]) >= 6 and pairs["normal"] == pairs["toy-bert"]  # the same pairs, correct for both models
    for r in by_model["toy-bert"]:
        assert r["target_label"] == data_ids[r["target_index"]]  # the data's label space
        if r["status"] != "skipped":
            assert r["rank_before"] <= 2 and (r["rank_after"] > 2) == r["success"]
    assert json.loads((out / "run.json").read_text())["hf_models"] == {"toy-bert": str(hf_classifier_dir)}

    # alone (no checkpoint, no model config needed), and refused when its labels are not the data's
    alone = tmp_path / "alone"
    main(["attack", "--data.class_path=xmtc.data.datamodule.XMTCDataModule", f"--data.init_args.data_dir={data}",
          f"--hf_model={hf_classifier_dir}", f"--output_dir={alone}", f"--settings.masked_lm={mlm}",
          "--settings.candidates=8", f"--settings.encoder_path={encoder}", "--settings.min_labels_per_bin=2",
          "--settings.samples_per_bin=2", "--settings.k=2", "--show_progress=false", "--trainer.accelerator=cpu"])
    assert {json.loads(line)["model"] for line in (alone / "results.jsonl").read_text().splitlines()} == {"toy-bert"}
    other = tmp_path / "other-labels"
    shutil.copytree(hf_classifier_dir, other)
    config = json.loads((other / "config.json").read_text(encoding="utf-8"))
    config["id2label"]["0"] = "forestry"
    (other / "config.json").write_text(json.dumps(config), encoding="utf-8")
    status = run(["attack", f"--config={REPO / 'configs' / 'demo_axml.yaml'}", f"--data.init_args.data_dir={data}",
                  f"--hf_model={other}", f"--output_dir={tmp_path / 'refused'}", f"--settings.masked_lm={mlm}"])
    err = capsys.readouterr().err
    assert status == 2 and (f"error: --hf_model {other} has another label space than the data: 1 of the data's "
                            "labels are not among the model's (e.g. ['dairy'])") in err, err[-2000:]


def test_nontargeted_attacks_through_the_cli_bin_by_the_rarest_correct_label_and_resume(setup, tmp_path):
    out = tmp_path / "nontargeted"
    _attack(setup, out, "--settings.kinds=[nontargeted]")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows and {r["kind"] for r in rows} == {"nontargeted"}
    for r in rows:
        gamma = json.loads(r["message"].split("gamma=")[1].split(";")[0])
        assert r["bin_label_index"] in gamma  # binned by one of the correctly predicted true labels Γ
        assert r["target_index"] in gamma  # and reports the one of Γ that fell furthest
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [g["kind"] for g in summary["groups"]] == ["nontargeted"]
    _attack(setup, out, "--settings.kinds=[nontargeted]")  # resumes: every job is done, nothing is added
    assert len((out / "results.jsonl").read_text(encoding="utf-8").splitlines()) == len(rows)


def test_a_transformation_part_from_the_command_line(setup, tmp_path):
    """``--settings.transformation`` takes a part (class_path + init_args): word-vector neighbours here, from a
    vectors file the test writes (each topic word next to a word of another topic), with a beam search."""
    words = ["fishing", "vessels", "catch", "quota", "milk", "cheese", "butter", "cows", "tax", "customs", "duty",
             "tariff", "rail", "train", "freight", "track", "wine", "grapes", "vineyard", "council", "regulation"]
    rng = np.random.default_rng(0)
    base = rng.normal(size=(len(words), 8))
    lines = [f"{w} " + " ".join(f"{x:.5f}" for x in v) for w, v in zip(words, base, strict=True)]
    # near neighbours across topics: "fishing" ~ "cheese", "milk" ~ "tariff", ...
    for a, b in (("fishing", "cheese"), ("milk", "tariff"), ("rail", "grapes"), ("tax", "vessels")):
        v = base[words.index(a)] + 0.05 * rng.normal(size=8)
        lines = [line for line in lines if not line.startswith(f"{b} ")] + [f"{b} " + " ".join(f"{x:.5f}" for x in v)]
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "vectors-run"
    _attack(setup, out, "--settings.transformation=xmtc.attack.word_vectors.WordVectorNeighbours",
            f"--settings.transformation.path={vectors}", "--settings.transformation.k=4",
            "--settings.search=xmtc.attack.search.BeamSearch", "--settings.search.width=2")
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))["settings"]
    assert run["transformation"]["class_path"] == "xmtc.attack.word_vectors.WordVectorNeighbours"
    assert run["transformation"]["init_args"]["path"] == str(vectors) and run["transformation"]["init_args"]["k"] == 4
    assert run["search"] == {"class_path": "xmtc.attack.search.BeamSearch", "init_args": {"width": 2}}
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    new_words = {c["new"] for r in rows for c in r["changes"]}
    assert rows and new_words and new_words <= set(words)  # every substitute comes from the vectors file
