"""GLUE data: the original tsv layout read against the real local mirror, its damaged variants named by file and
line, and a missing source that says what to set."""
import numpy as np
import pytest

from experiments.glue.data import load_glue, read_tsv
from experiments.shared.tasks import load_task

from helpers import GLUE, needs_glue


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
    ("mrpc", "MRPC", "Quality\t#1 String\n1\tA\n", "2 columns, but GLUE mrpc reads column 5"),
    ("mrpc", "MRPC", "", "has no examples after its header"),
    ("mrpc", "MRPC", MRPC_HEADER, "has no examples after its header"),
    ("cola", "CoLA", "", "has no examples"),
])
def test_broken_tsv_names_file_and_line(tmp_path, task, folder, text, match):
    from experiments.glue.data import read_tsv

    with pytest.raises(ValueError, match=match):
        read_tsv(tsv(tmp_path, folder, text), load_task(task))




@needs_glue
@pytest.mark.parametrize("task,rows,first_label", [("mrpc", 408, 1), ("cola", 1043, None), ("rte", 277, None), ("stsb", 1500, 5.0)])
def test_local_tsv_reader(task, rows, first_label):
    data = read_tsv(GLUE / load_task(task).folder / "dev.tsv", load_task(task))
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


@needs_glue
def test_qnli_without_train_split_is_explained():
    with pytest.raises(FileNotFoundError, match="no QNLI train split"):
        load_glue(load_task("qnli"), str(GLUE))
