"""Tests of xmtc.data.readers: both on-disk formats, and every kind of bad input in both on_invalid modes."""

from __future__ import annotations

import gzip
import pickle
import warnings
from pathlib import Path

import pytest

from xmtc.data.readers import (
    DataFormatError,
    RawSplit,
    has_split,
    read_label_names,
    read_split,
    split_files,
)

DEMO = Path(__file__).parents[1] / "data" / "eurlex57k-demo"


# --------------------------------------------------------------------------- fixture writers


def _lines(lines: list[str | bytes]) -> bytes:
    return b"".join((x if isinstance(x, bytes) else x.encode("utf-8")) + b"\n" for x in lines)


def write_axml(
    d: Path,
    texts: list[str | bytes],
    labels: list[str | bytes],
    ids: list[str | bytes] | None = None,
    split: str = "train",
    gz: bool = False,
) -> Path:
    """An AttentionXML split in ``d``; returns the raw-text file."""
    d.mkdir(parents=True, exist_ok=True)
    text_path = d / f"{split}_raw_texts.txt{'.gz' if gz else ''}"
    if gz:
        with gzip.open(text_path, "wb") as f:
            f.write(_lines(texts))
    else:
        text_path.write_bytes(_lines(texts))
    (d / f"{split}_labels.txt").write_bytes(_lines(labels))
    if ids is not None:
        (d / f"{split}_ids.txt").write_bytes(_lines(ids))
    return text_path


def write_csv(d: Path, content: str | bytes, split: str = "train") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{split}.csv"
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return p


def read_skip(d: Path, split: str = "train") -> tuple[RawSplit, str]:
    """read_split(on_invalid="skip"), asserting that exactly one warning was emitted; returns it too."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        r = read_split(d, split, on_invalid="skip")
    assert len(rec) == 1, [str(w.message) for w in rec]
    assert issubclass(rec[0].category, UserWarning)
    return r, str(rec[0].message)


def read_quiet(d: Path, split: str = "train", on_invalid: str = "error") -> RawSplit:
    """read_split, failing on any warning (valid data must read silently)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read_split(d, split, on_invalid=on_invalid)  # type: ignore[arg-type]


def expect_error(
    d: Path, file_name: str, line: int | None, *, split: str = "train", on_invalid: str = "error"
):
    with pytest.raises(DataFormatError) as ei:
        read_split(d, split, on_invalid=on_invalid)  # type: ignore[arg-type]
    msg = str(ei.value)
    assert file_name in msg
    if line is not None:
        assert f"{file_name}:{line}:" in msg, msg
        assert ei.value.line == line
    return ei.value


# --------------------------------------------------------------------------- AttentionXML happy paths


def test_axml_plain_text(tmp_path: Path) -> None:
    texts = ["first  doc\twith tabs ", "  second doc", "third \x0b doc \u2028 with \r odd separators \x1c"]
    src = write_axml(tmp_path, texts, ["3 1 2", "7\t8  7", "1"], ids=["A", "B", " C "])
    r = read_quiet(tmp_path)
    assert r.texts == texts  # only the newline is stripped; odd separators do not split lines
    assert r.labels == [["3", "1", "2"], ["7", "8"], ["1"]]
    assert r.ids == ["A", "B", "C"]
    assert r.source == str(src)
    assert r.skipped == 0


def test_axml_gzip_without_ids_crlf_and_bom(tmp_path: Path) -> None:
    write_axml(tmp_path, ["\ufeffdoc one\r", "doc two\r"], ["\ufeff5 5 4\r", "6\r"], gz=True)
    r = read_quiet(tmp_path)
    assert r.texts == ["doc one", "doc two"]
    assert r.labels == [["5", "4"], ["6"]]
    assert r.ids == ["train:1", "train:2"]
    assert r.source.endswith("train_raw_texts.txt.gz")


def test_axml_last_line_without_newline(tmp_path: Path) -> None:
    (tmp_path / "test_raw_texts.txt").write_bytes(b"a\nb")
    (tmp_path / "test_labels.txt").write_bytes(b"1\n2")
    r = read_quiet(tmp_path, "test")
    assert r.texts == ["a", "b"] and r.labels == [["1"], ["2"]] and r.ids == ["test:1", "test:2"]


def test_axml_preferred_over_csv_and_split_files(tmp_path: Path) -> None:
    text = write_axml(tmp_path, ["a"], ["1"], ids=["x"])
    write_csv(tmp_path, "id,text,label\nz,csv doc,9\n")
    assert read_quiet(tmp_path).texts == ["a"]
    assert split_files(tmp_path, "train") == [text, tmp_path / "train_labels.txt", tmp_path / "train_ids.txt"]
    assert has_split(tmp_path, "train")
    assert not has_split(tmp_path, "dev") and split_files(tmp_path, "dev") == []
    assert not has_split(tmp_path / "nope", "train") and split_files(tmp_path / "nope", "train") == []


def test_both_plain_and_gzip_texts_is_an_error(tmp_path: Path) -> None:
    write_axml(tmp_path, ["a"], ["1"])
    write_axml(tmp_path, ["a"], ["1"], gz=True)
    with pytest.raises(DataFormatError, match=r"train_raw_texts\.txt and train_raw_texts\.txt\.gz"):
        read_split(tmp_path, "train")


# --------------------------------------------------------------------------- CSV happy path


def test_csv_quoted_fields(tmp_path: Path) -> None:
    content = (
        "label,extra,text,id\r\n"
        '"b, a ,b",x,"text, with commas",d1\r\n'
        'c,y,"multi\nline ""quoted"" text",d2\r\n'
        "\r\n"  # blank line: no data, ignored
        "a,z,plain,d3\r\n"
    )
    src = write_csv(tmp_path, content, split="dev")
    r = read_quiet(tmp_path, "dev")
    assert r.texts == ["text, with commas", 'multi\nline "quoted" text', "plain"]
    assert r.labels == [["b", "a"], ["c"], ["a"]]
    assert r.ids == ["d1", "d2", "d3"]
    assert r.source == str(src)
    assert split_files(tmp_path, "dev") == [src] and has_split(tmp_path, "dev")


def test_csv_header_case_whitespace_and_bom(tmp_path: Path) -> None:
    write_csv(tmp_path, "\ufeff Id ,TEXT,Label\n1,t,a\n")
    r = read_quiet(tmp_path)
    assert (r.ids, r.texts, r.labels) == (["1"], ["t"], [["a"]])


# --------------------------------------------------------------------------- label names


def test_label_names_tsv(tmp_path: Path) -> None:
    (tmp_path / "label_names.tsv").write_text("5\tretail trade\n7\tname\twith tab\n\n9\t\n", encoding="utf-8")
    (tmp_path / "labels.txt").write_text("ignored\n", encoding="utf-8")
    assert read_label_names(tmp_path) == {"5": "retail trade", "7": "name\twith tab", "9": ""}


def test_label_names_from_labels_txt(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("Physics\nhigh energy\n\nPhysics\n", encoding="utf-8")
    assert read_label_names(tmp_path) == {"Physics": "Physics", "high energy": "high energy"}


def test_label_names_absent(tmp_path: Path) -> None:
    assert read_label_names(tmp_path) == {}
    with pytest.raises(DataFormatError, match="does not exist"):
        read_label_names(tmp_path / "missing")


def test_label_names_line_without_tab(tmp_path: Path) -> None:
    (tmp_path / "label_names.tsv").write_text("1\tone\n2 two\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"label_names\.tsv:2: no TAB"):
        read_label_names(tmp_path)


def test_label_names_duplicate_id(tmp_path: Path) -> None:
    (tmp_path / "label_names.tsv").write_text("1\tone\n2\ttwo\n1\tuno\n", encoding="utf-8")
    with pytest.raises(
        DataFormatError, match=r"label_names\.tsv:3: duplicate label id '1' \(first on line 1\)"
    ):
        read_label_names(tmp_path)


def test_label_names_invalid_utf8(tmp_path: Path) -> None:
    (tmp_path / "label_names.tsv").write_bytes(b"1\tone\n2\ttw\xff\n")
    with pytest.raises(DataFormatError, match=r"label_names\.tsv:2: invalid UTF-8.*byte offset 4"):
        read_label_names(tmp_path)


# --------------------------------------------------------------------------- locating a split


def test_missing_split_lists_names(tmp_path: Path) -> None:
    (tmp_path / "valid.csv").write_text("id,text,label\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as ei:
        read_split(tmp_path, "dev")
    msg = str(ei.value)
    for name in ("dev_raw_texts.txt", "dev_raw_texts.txt.gz", "dev.csv", "valid.csv", str(tmp_path)):
        assert name in msg


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"data directory .*missing.* does not exist"):
        read_split(tmp_path / "missing", "train")


def test_missing_labels_file(tmp_path: Path) -> None:
    (tmp_path / "train_raw_texts.txt").write_text("a\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"missing train_labels\.txt"):
        read_split(tmp_path, "train")


def test_bad_on_invalid_value(tmp_path: Path) -> None:
    write_axml(tmp_path, ["a"], ["1"])
    with pytest.raises(ValueError, match="on_invalid"):
        read_split(tmp_path, "train", on_invalid="ignore")  # type: ignore[arg-type]


def test_error_pickles_with_location() -> None:
    e = pickle.loads(pickle.dumps(DataFormatError("bad", "/x/f.txt", 3)))
    assert (str(e), e.path, e.line) == ("/x/f.txt:3: bad", "/x/f.txt", 3)


# --------------------------------------------------------------------------- AttentionXML bad input


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_axml_text_label_count_mismatch(tmp_path: Path, mode: str) -> None:
    write_axml(tmp_path, ["a", "b", "c"], ["1", "2"], gz=True)
    e = expect_error(tmp_path, "train_labels.txt", None, on_invalid=mode)
    assert "train_raw_texts.txt.gz has 3 lines" in str(e) and "train_labels.txt has 2 lines" in str(e)


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_axml_labels_longer_than_texts(tmp_path: Path, mode: str) -> None:
    # the count mismatch is reported even though line 2 of the texts is also empty: the shift explains more
    write_axml(tmp_path, ["a", " ", "c"], ["1", "2", "3", "4"])
    e = expect_error(tmp_path, "train_raw_texts.txt", None, on_invalid=mode)
    assert "has 3 lines" in str(e) and "train_labels.txt has 4 lines" in str(e)


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_axml_ids_count_mismatch(tmp_path: Path, mode: str) -> None:
    write_axml(tmp_path, ["a", "b"], ["1", "2"], ids=["x"])
    e = expect_error(tmp_path, "train_ids.txt", None, on_invalid=mode)
    assert "train_ids.txt has 1 lines" in str(e) and "train_labels.txt has 2 lines" in str(e)


@pytest.mark.parametrize("bad", ["", "  \t "])
@pytest.mark.parametrize("gz", [False, True])
def test_axml_empty_document(tmp_path: Path, bad: str, gz: bool) -> None:
    name = "train_raw_texts.txt" + (".gz" if gz else "")
    write_axml(tmp_path, ["a", "b", bad, "d"], ["1", "2", "3", "4"], ids=["i1", "i2", "i3", "i4"], gz=gz)
    e = expect_error(tmp_path, name, 3)
    assert "empty" in str(e)
    r, msg = read_skip(tmp_path)
    assert (r.texts, r.labels, r.ids, r.skipped) == (
        ["a", "b", "d"],
        [["1"], ["2"], ["4"]],
        ["i1", "i2", "i4"],
        1,
    )
    assert "skipped 1" in msg and "empty document: 1" in msg and f"{name}:3" in msg


def test_axml_invalid_utf8_in_text(tmp_path: Path) -> None:
    write_axml(tmp_path, ["ok", "caf\xe9 ok".encode() + b" \xff\xfe end", "fine"], ["1", "2", "3"])
    e = expect_error(tmp_path, "train_raw_texts.txt", 2)
    # 'café ok ' is 9 bytes but 8 characters: both the byte offset and the column are given
    assert "invalid UTF-8" in str(e) and "byte offset 9" in str(e) and "column 9" in str(e) and "ff" in str(e)
    r, msg = read_skip(tmp_path)
    assert (r.texts, r.labels, r.ids) == (["ok", "fine"], [["1"], ["3"]], ["train:1", "train:3"])
    assert r.skipped == 1 and "invalid UTF-8: 1" in msg and "train_raw_texts.txt:2" in msg


def test_axml_invalid_utf8_in_labels_and_ids(tmp_path: Path) -> None:
    write_axml(tmp_path, ["a", "b", "c"], ["1", b"\xc3(", "3"], ids=["x", "y", b"z\x80"])
    expect_error(tmp_path, "train_labels.txt", 2)
    r, msg = read_skip(tmp_path)
    assert (r.texts, r.labels, r.ids, r.skipped) == (["a"], [["1"]], ["x"], 2)
    assert "invalid UTF-8: 2" in msg and "train_labels.txt:2" in msg
    write_axml(tmp_path, ["a", "b", "c"], ["1", "2", "3"], ids=["x", "y", b"z\x80"])
    expect_error(tmp_path, "train_ids.txt", 3)


@pytest.mark.parametrize("bad", ["", "   "])
def test_axml_blank_label_line(tmp_path: Path, bad: str) -> None:
    write_axml(tmp_path, ["a", "b", "c"], ["1 2", bad, "3"])
    e = expect_error(tmp_path, "train_labels.txt", 2)
    assert "blank label line" in str(e)
    r, msg = read_skip(tmp_path)
    assert (r.texts, r.labels, r.ids, r.skipped) == (
        ["a", "c"],
        [["1", "2"], ["3"]],
        ["train:1", "train:3"],
        1,
    )
    assert "blank label line: 1" in msg and "train_labels.txt:2" in msg


def test_axml_empty_id(tmp_path: Path) -> None:
    write_axml(tmp_path, ["a", "b"], ["1", "2"], ids=["x", " "])
    expect_error(tmp_path, "train_ids.txt", 2)
    r, _ = read_skip(tmp_path)
    assert r.ids == ["x"]


def test_axml_skip_many_warns_once(tmp_path: Path) -> None:
    texts: list[str | bytes] = ["ok1", "", "ok3", b"\xff", "ok5", "ok6", " "]
    labels: list[str | bytes] = ["1", "2", "3", "4", "5", "", "7"]
    write_axml(tmp_path, texts, labels, gz=True)
    e = expect_error(tmp_path, "train_raw_texts.txt.gz", 2)  # error mode stops at the first
    assert "empty" in str(e)
    r, msg = read_skip(tmp_path)
    assert r.texts == ["ok1", "ok3", "ok5"] and r.labels == [["1"], ["3"], ["5"]]
    assert r.ids == ["train:1", "train:3", "train:5"] and r.skipped == 4
    assert "skipped 4" in msg and "empty document: 2" in msg and "invalid UTF-8: 1" in msg
    assert "blank label line: 1" in msg and "train_raw_texts.txt.gz:2" in msg


def test_axml_all_documents_skipped(tmp_path: Path) -> None:
    write_axml(tmp_path, [" "], ["1"])
    r, _ = read_skip(tmp_path)
    assert (r.texts, r.skipped) == ([], 1)


def test_axml_empty_files(tmp_path: Path) -> None:
    write_axml(tmp_path, [], [])
    expect_error(tmp_path, "train_raw_texts.txt", None)


def test_axml_truncated_gzip(tmp_path: Path) -> None:
    path = write_axml(
        tmp_path, [f"document {i} " * 50 for i in range(200)], [str(i) for i in range(200)], gz=True
    )
    path.write_bytes(path.read_bytes()[:-100])
    e = expect_error(tmp_path, "train_raw_texts.txt.gz", None, on_invalid="skip")
    assert "corrupt or truncated gzip" in str(e)


# --------------------------------------------------------------------------- CSV bad input


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_csv_missing_columns(tmp_path: Path, mode: str) -> None:
    write_csv(tmp_path, "id,content,labels\n1,t,a\n")
    e = expect_error(tmp_path, "train.csv", 1, on_invalid=mode)
    assert "['text', 'label']" in str(e) and "found columns ['id', 'content', 'labels']" in str(e)


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_csv_unterminated_quote(tmp_path: Path, mode: str) -> None:
    write_csv(tmp_path, 'id,text,label\n1,"never closed,a\n2,t,b\n')
    e = expect_error(tmp_path, "train.csv", 2, on_invalid=mode)
    assert "malformed CSV" in str(e)


# rows 1 and 3 span two physical lines, so the bad row's line number differs from its row number
_CSV_HEAD = 'id,text,label\nd1,"two\nlines",a\nd2,fine,b\n'
_CSV_TAIL = 'd4,"also\ntwo",c\nd5,last,"d,e"\n'
_CSV_OK = (
    ["d1", "d2", "d4", "d5"],
    ["two\nlines", "fine", "also\ntwo", "last"],
    [["a"], ["b"], ["c"], ["d", "e"]],
)


@pytest.mark.parametrize(
    ("bad_row", "kind"),
    [
        ("d3,too,many,fields\n", "wrong number of fields: 1"),
        ("d3,too few\n", "wrong number of fields: 1"),
        ('d3,"  ",x\n', "empty text field: 1"),
        ("d3,,x\n", "empty text field: 1"),
        ("d3,text,\n", "empty label field: 1"),
        ('d3,text," , ,"\n', "empty label field: 1"),
        (",text,x\n", "empty id: 1"),
    ],
)
def test_csv_bad_row(tmp_path: Path, bad_row: str, kind: str) -> None:
    write_csv(tmp_path, _CSV_HEAD + bad_row + _CSV_TAIL)
    expect_error(tmp_path, "train.csv", 5)
    r, msg = read_skip(tmp_path)
    assert (r.ids, r.texts, r.labels) == _CSV_OK and r.skipped == 1
    assert kind in msg and "train.csv:5" in msg


def test_csv_invalid_utf8_inside_multiline_row(tmp_path: Path) -> None:
    content = _CSV_HEAD.encode() + b'd3,"first line\nsecond \xe2\x82 line",x\n' + _CSV_TAIL.encode()
    write_csv(tmp_path, content)
    e = expect_error(tmp_path, "train.csv", 6)  # the row starts on line 5; the bad byte is on line 6
    assert "byte offset 7" in str(e)
    r, msg = read_skip(tmp_path)
    assert (r.ids, r.texts, r.labels) == _CSV_OK and r.skipped == 1
    assert "invalid UTF-8: 1" in msg and "train.csv:6" in msg


def test_csv_skip_many_warns_once(tmp_path: Path) -> None:
    write_csv(tmp_path, "id,text,label\n1,,a\n2,ok,b\n3,x\n4,ok,\n5,ok4,c\n")
    expect_error(tmp_path, "train.csv", 2)
    r, msg = read_skip(tmp_path)
    assert (r.ids, r.texts, r.labels, r.skipped) == (["2", "5"], ["ok", "ok4"], [["b"], ["c"]], 3)
    assert "skipped 3" in msg and "train.csv:2" in msg


def test_csv_header_only(tmp_path: Path) -> None:
    write_csv(tmp_path, "id,text,label\n")
    expect_error(tmp_path, "train.csv", None)


# --------------------------------------------------------------------------- the committed demo subset


def test_demo_subset() -> None:
    r = read_quiet(DEMO, "train")
    assert len(r.texts) == len(r.labels) == len(r.ids) == 4000 and r.skipped == 0
    ids = (DEMO / "train_ids.txt").read_text(encoding="utf-8").split()
    assert r.ids == ids
    assert r.texts[0].startswith("EEC: Council Decision of 4 December 1962")
    assert r.labels[0] == ["1005", "210", "2443", "2493", "2734", "2897"]
    assert all(r.labels) and all(t.strip() for t in r.texts)
    assert has_split(DEMO, "test") and not has_split(DEMO, "dev")
    names = read_label_names(DEMO)
    assert names["5"] == "retail trade"
    assert {lab for doc in r.labels for lab in doc} <= names.keys()
