"""The EURLEX57K converter on a tiny synthetic release, as a directory and as a zip."""

from __future__ import annotations

import gzip
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from xmtc.data.convert import convert_eurlex57k, main
from xmtc.data.datamodule import XMTCDataModule
from xmtc.data.readers import DataFormatError, read_label_names, read_split


def _doc(celex: str, concepts: list[str], body: list[str], **extra: object) -> dict:
    doc = {"celex_id": celex, "uri": f"http://publications.europa.eu/resource/celex/{celex}", "type": "Regulation",
           "concepts": concepts, "title": f"Regulation {celex}\n", "header": "THE COMMISSION ,\n",
           "recitals": "Whereas:\n(1)  fish  stocks\tare low;", "main_body": body,
           "attachments": "Done at Brussels.\n\n  For the Commission"}
    doc.update(extra)
    return doc


# (split, file stem, document); stems chosen so that file-name order differs from plain id order
RELEASE = [
    ("train", "31993D0724", _doc("31993D0724", ["2771", "192"], ["Article 1\nQuotas are fixed.", "Article 2"])),
    ("train", "31993D0724(01)", _doc("31993D0724(01)", ["c_871b5612"], ["Article 1  Wine."])),
    ("train", "31958R0001", _doc("31958R0001", ["192", "863", "192"], ["Article 1 Languages."], recitals="")),
    ("train", "32014R0001", _doc("32014R0001", ["863"], ["Article 1"], attachments=["Annex I", "Annex  II"])),
    ("dev", "32010D0002", _doc("32010D0002", ["2771"], ["Article 1 Dairy."], recitals=None)),
    ("test", "32014D0514(02)", _doc("32014D0514(02)", ["192", "9999"], ["Article 1 Fish."])),
    ("test", "32014D0514", _doc("32014D0514", ["863"], ["Article 1 Transport."])),
]
DESCRIPTORS = {"863": {"label": "fishery  policy", "parents": []}, "192": {"label": "health", "parents": []},
               "c_871b5612": {"label": "wine", "parents": []}, "2771": {"label": "dairy\tproduct", "parents": []},
               "9999": {"label": "never in train", "parents": []}}


def _write_dir(root: Path) -> Path:
    for split, stem, doc in RELEASE:
        d = root / "dataset" / split
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{stem}.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    (root / "dataset" / "train" / "._31958R0001.json").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (root / "EURLEX57K.json").write_text(json.dumps(DESCRIPTORS), encoding="utf-8")
    return root


def _write_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for split, stem, doc in reversed(RELEASE):  # member order must not matter
            zf.writestr(f"dataset/{split}/{stem}.json", json.dumps(doc))
            zf.writestr(f"__MACOSX/dataset/{split}/._{stem}.json", b"\x00\x05\x16\x07")
    (path.parent / "EURLEX57K.json").write_text(json.dumps(DESCRIPTORS), encoding="utf-8")
    return path


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def test_directory_release_converts_in_file_name_order_with_collapsed_text(tmp_path):
    out = tmp_path / "out"
    counts = convert_eurlex57k(_write_dir(tmp_path / "release"), out, log=lambda _: None)
    assert counts == {"train": 4, "dev": 1, "test": 2}
    # file-name order: "(" sorts before ".", so 31993D0724(01).json comes before 31993D0724.json
    assert _lines(out / "train_ids.txt") == ["31958R0001", "31993D0724(01)", "31993D0724", "32014R0001"]
    assert _lines(out / "test_ids.txt") == ["32014D0514(02)", "32014D0514"]
    texts = _lines(out / "train_raw_texts.txt.gz")
    assert texts[2] == ("Regulation 31993D0724 THE COMMISSION , Whereas: (1) fish stocks are low; Article 1 "
                        "Quotas are fixed. Article 2 Done at Brussels. For the Commission")
    assert texts[0].startswith("Regulation 31958R0001 THE COMMISSION , Article 1 Languages. Done")  # empty recitals
    assert texts[3].endswith("Article 1 Annex I Annex II")  # attachments given as a list
    assert _lines(out / "dev_raw_texts.txt.gz") == [
        "Regulation 32010D0002 THE COMMISSION , Article 1 Dairy. Done at Brussels. For the Commission"]
    assert _lines(out / "train_labels.txt") == ["192 863", "c_871b5612", "192 2771", "863"]  # sorted, unique
    assert _lines(out / "label_names.tsv") == ["192\thealth", "863\tfishery policy", "2771\tdairy product",
                                               "9999\tnever in train", "c_871b5612\twine"]
    sums = dict(reversed(line.split("  ")) for line in _lines(out / "SHA256SUMS"))
    assert len(sums) == 10
    for name, digest in sums.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest


def test_zip_release_gives_the_same_bytes_as_the_extracted_directory(tmp_path):
    from_dir, from_zip = tmp_path / "a", tmp_path / "b"
    convert_eurlex57k(_write_dir(tmp_path / "release"), from_dir, log=lambda _: None)
    (tmp_path / "zipped").mkdir()
    convert_eurlex57k(_write_zip(tmp_path / "zipped" / "datasets.zip"), from_zip, log=lambda _: None)
    names = sorted(p.name for p in from_dir.iterdir())
    assert names == sorted(p.name for p in from_zip.iterdir())
    for name in names:
        assert (from_dir / name).read_bytes() == (from_zip / name).read_bytes(), name


def test_output_loads_with_the_readers_and_the_datamodule(tmp_path):
    out = tmp_path / "out"
    assert main(["eurlex57k", str(_write_dir(tmp_path / "release")), str(out)]) == 0
    train = read_split(out, "train")
    assert train.ids[1] == "31993D0724(01)" and train.labels[1] == ["c_871b5612"]
    assert read_label_names(out)["2771"] == "dairy product"
    dm = XMTCDataModule(str(out), max_length=50, batch_size=2)
    dm.setup("fit")
    with pytest.warns(UserWarning, match="1 labels .* never occur in training"):  # concept 9999
        dm.setup("test")
    assert len(dm.datasets["train"]) == 4 and len(dm.datasets["val"]) == 1  # dev split used for validation
    assert dm.label_stats.label_ids[:2] == ["192", "863"]  # most frequent first
    assert dm.label_stats.label_names[dm.label_stats.label_ids.index("c_871b5612")] == "wine"
    batch = next(iter(dm.test_dataloader()))
    assert batch["targets"].shape == (2, dm.num_labels)


def test_errors_name_the_file_and_refuse_to_overwrite(tmp_path, capsys):
    release = _write_dir(tmp_path / "release")
    out = tmp_path / "out"
    convert_eurlex57k(release, out, log=lambda _: None)
    with pytest.raises(DataFormatError, match="already holds"):
        convert_eurlex57k(release, out, log=lambda _: None)
    bad = release / "dataset" / "dev" / "32010D0002.json"
    bad.write_text('{"celex_id": "32010D0002", "concepts": []', encoding="utf-8")
    with pytest.raises(DataFormatError, match="32010D0002.json: not valid JSON"):
        convert_eurlex57k(release, out, overwrite=True, log=lambda _: None)
    bad.write_text(json.dumps(_doc("32010D0002", [], ["x"])), encoding="utf-8")
    with pytest.raises(DataFormatError, match="32010D0002.json: field 'concepts' must be a non-empty list"):
        convert_eurlex57k(release, out, overwrite=True, log=lambda _: None)
    bad.write_text(json.dumps(_doc("32010D0002", ["1"], ["x"], title=7)), encoding="utf-8")
    with pytest.raises(DataFormatError, match="32010D0002.json: field 'title' must be a string"):
        convert_eurlex57k(release, out, overwrite=True, log=lambda _: None)
    # a zip member is named as zip:member; the CLI prints the error and exits 1
    zpath = tmp_path / "bad.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("dataset/train/1.json", json.dumps(_doc("1", ["5"], ["a"])))
        zf.writestr("dataset/test/2.json", json.dumps({"concepts": ["5"], "title": "t"}))
    assert main(["eurlex57k", str(zpath), str(tmp_path / "z")]) == 1
    assert "bad.zip:dataset/test/2.json: field 'celex_id' missing" in capsys.readouterr().err
    with pytest.raises(DataFormatError, match="no train/\\*.json documents"):
        convert_eurlex57k(tmp_path / "out", tmp_path / "y", log=lambda _: None)


def test_without_descriptors_no_label_names_and_the_reason_is_printed(tmp_path):
    release = _write_dir(tmp_path / "release")
    (release / "EURLEX57K.json").unlink()
    said: list[str] = []
    counts = convert_eurlex57k(release / "dataset", tmp_path / "out", log=said.append)  # the inner directory works too
    assert counts == {"train": 4, "dev": 1, "test": 2}
    assert not (tmp_path / "out" / "label_names.tsv").exists()
    assert any("label_names.tsv not written" in s for s in said)
    assert len(_lines(tmp_path / "out" / "SHA256SUMS")) == 9
    assert read_label_names(tmp_path / "out") == {}
