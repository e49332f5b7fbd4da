"""GLUE data: the original tsv layout read against the real data that ships in data/glue, its damaged variants named by file and
line, and a missing source that says what to set."""
import numpy as np
import pytest

from experiments.glue.data import load_glue, read_tsv
from experiments.shared.sources import local_file
from experiments.shared.tasks import load_task

from helpers import GLUE


def tsv(tmp_path, task_folder, text):
    folder = tmp_path / "glue" / task_folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text(text)
    return folder / "train.tsv"


MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"


@pytest.mark.parametrize("task,folder,text,match", [
    ("mrpc", "MRPC", MRPC_HEADER + "1\t1\t2\tA cat.\n", r"train.tsv, line 2: 4 tab-separated columns where the file has 5"),
    ("mrpc", "MRPC", MRPC_HEADER + "1\t1\t2\tA\tcat.\tB\n", r"line 2: 6 tab-separated columns"),
    ("mrpc", "MRPC", MRPC_HEADER + "1\t1\t2\tA\tB\n2\t1\t2\tA\tB\n", r"line 3: label '2' is not one of \['0', '1'\]"),
    ("rte", "RTE", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n", "line 2: label 'maybe' is not one of"),
    ("stsb", "STS-B", "a\tb\tc\td\te\tf\tg\ts1\ts2\tscore\n" + "x\t" * 7 + "a\tb\tsix\n",
     r"line 2: similarity 'six' is not a number in \[0, 5\]"),
    ("mrpc", "MRPC", "Quality\t#1 String\n1\tA\n", "2 columns, but GLUE mrpc needs 5"),
    ("mrpc", "MRPC", "", "has no examples after its header"),
    ("mrpc", "MRPC", MRPC_HEADER, "has no examples after its header"),
    ("cola", "CoLA", "", "has no examples"),
])
def test_broken_tsv_names_file_and_line(tmp_path, task, folder, text, match):
    from experiments.glue.data import read_tsv

    with pytest.raises(ValueError, match=match):
        read_tsv(tsv(tmp_path, folder, text), load_task(task))




@pytest.mark.parametrize("task,rows,first_label", [("mrpc", 408, 1), ("cola", 1043, None), ("rte", 277, None), ("stsb", 1500, 5.0)])
def test_local_tsv_reader(task, rows, first_label):
    data = read_tsv(local_file(GLUE / load_task(task).folder / "dev.tsv"), load_task(task))
    assert len(data) == rows
    if first_label is not None:
        assert data[0]["label"] == first_label
    values = np.asarray(data["label"])
    if task == "stsb":  # similarities in [0, 5], spread over the range
        assert values.min() >= 0 and values.max() <= 5 and values.std() > 1
    else:
        assert set(np.unique(values)) == {0, 1}


def test_missing_data_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from experiments.shared import sources

    sources.hub_reachable.cache_clear()
    with pytest.raises(FileNotFoundError, match="Set data.glue_dir=/path or the FOURIERFT_GLUE_DIR variable"):
        load_glue(load_task("rte"), None, [tmp_path / "nowhere"])
    with pytest.raises(FileNotFoundError, match="data.glue_dir=.* is not a folder"):
        load_glue(load_task("rte"), str(tmp_path / "nowhere"))
    sources.hub_reachable.cache_clear()


def test_qnli_without_train_split_is_explained():
    with pytest.raises(FileNotFoundError, match="no QNLI train split"):
        load_glue(load_task("qnli"), str(GLUE))


MNLI_TRAIN = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
MNLI_DEV = MNLI_TRAIN[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]
MNLI_LABELS = ["entailment", "neutral", "contradiction"]


def mnli_folder(root, n_train=24, n_dev=12):
    """MNLI in the original layout: train.tsv with 12 columns, dev_matched.tsv with 16, the label last in both."""
    folder = root / "MNLI"
    folder.mkdir(parents=True)
    for file, header, n in (("train.tsv", MNLI_TRAIN, n_train), ("dev_matched.tsv", MNLI_DEV, n_dev)):
        rows = ["\t".join(header)]
        for i in range(n):
            row = [str(i), "p", "q", "fiction", "(x)", "(y)", "(X)", "(Y)", f"premise {i}", f"hypothesis {i}"]
            row += [MNLI_LABELS[(i + 1) % 3]] * (len(header) - len(row) - 1) + [MNLI_LABELS[i % 3]]
            rows.append("\t".join(row))
        (folder / file).write_text("\n".join(rows) + "\n")
    return root


def test_mnli_is_one_task_file_composed_loaded_and_run(tmp_path, glue_config):
    """MNLI's dev split has another file name and column count than its train split: both are the task file's."""
    from experiments.runner import build_family, run

    cfg = glue_config("task=mnli", f"data.glue_dir={mnli_folder(tmp_path / 'glue')}", "trainer.epochs=1")
    family = build_family(cfg)
    data, source = family.load_data()
    assert source.endswith("glue") and (len(data["train"]), len(data["validation"])) == (24, 12)
    assert data["validation"]["premise"][4] == "premise 4" and data["validation"]["hypothesis"][4] == "hypothesis 4"
    assert data["train"]["label"] == [i % 3 for i in range(24)]  # gold_label, not label1 ((i + 1) % 3)
    assert data["validation"]["label"] == [i % 3 for i in range(12)]
    run(cfg)
    result = next((tmp_path / "results").rglob("*seed*.json"))
    assert '"task": "mnli"' in result.read_text() and '"dev_examples": 12' in result.read_text()


def test_qqp_offline_says_the_mirror_lacks_it(tmp_path, monkeypatch):
    """Figure 4's sixth task: from the hub when online; offline, with no local copy, a clear error."""
    from experiments.shared import sources

    monkeypatch.setattr(sources, "hub_reachable", lambda: False)
    with pytest.raises(FileNotFoundError, match=r"GLUE qqp: the Hugging Face hub is unreachable .*the GLUE copy in "
                                                r"data/glue has no QQP: QQP needs the hub"):
        load_glue(load_task("qqp"), None, [GLUE, tmp_path])
    qqp = tmp_path / "glue" / "QQP"
    qqp.mkdir(parents=True)
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    for file in ("train.tsv", "dev.tsv"):
        (qqp / file).write_text(header + "0\t1\t2\tWhat is a cat?\tWhat's a cat?\t1\n1\t3\t4\tWhy?\tHow?\t0\n")
    data, _ = load_glue(load_task("qqp"), str(tmp_path / "glue"))
    assert data["validation"]["question2"] == ["What's a cat?", "How?"] and data["train"]["label"] == [1, 0]


def test_a_compressed_copy_reads_as_the_plain_file_and_a_truncated_one_is_named(tmp_path):
    """data/ ships its tsv files xz-compressed: `train.tsv.xz` stands in for a missing `train.tsv`, reads to the same
    rows, and a truncated archive stops with the file's name (not lzma's bare EOFError)."""
    import lzma

    plain = tmp_path / "plain" / "RTE"
    plain.mkdir(parents=True)
    raw = lzma.decompress(local_file(GLUE / "RTE" / "dev.tsv").read_bytes())
    (plain / "dev.tsv").write_bytes(raw)
    (plain / "train.tsv").write_bytes(raw)
    packed = tmp_path / "packed" / "RTE"
    packed.mkdir(parents=True)
    for name in ("dev.tsv", "train.tsv"):
        (packed / f"{name}.xz").write_bytes(lzma.compress(raw))
    a, _ = load_glue(load_task("rte"), str(plain.parent))
    b, _ = load_glue(load_task("rte"), str(packed.parent))
    assert a["validation"].to_dict() == b["validation"].to_dict() and len(b["validation"]) == 277
    (packed / "dev.tsv.xz").write_bytes(lzma.compress(raw)[:2000])
    with pytest.raises(ValueError, match=r"dev\.tsv\.xz cannot be decompressed .*truncated"):
        load_glue(load_task("rte"), str(packed.parent))
