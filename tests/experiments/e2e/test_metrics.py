"""E2E scores against the official scorer (measure_scores.py of e2e-metrics, commit 1b9c4d8): its published output
for the challenge's example, and its output on edge cases (run separately with Perl's mteval-v13a and the METEOR
jar; the numbers below are what it printed)."""
import json
import subprocess
import sys

import pytest

from experiments.e2e.metrics import e2e_scores, read_outputs, read_references

from helpers import ROOT, SHARED

EXAMPLE = SHARED / "e2e_nlg" / "official-example"


needs_example = pytest.mark.skipif(not EXAMPLE.is_dir(), reason="official E2E example not present")


REFS = [["The Eagle is a cheap coffee shop near Burger King.", "Cheap coffee shop The Eagle is near Burger King."],
        ["Café Rouge serves ÉCLAIRS & coffee – near the river."],
        ["Zizzi is a pub.", "There is a pub called Zizzi.", "Zizzi, a pub."]]


def as_official(scores: dict) -> dict:
    """Our keys and scale -> the official scorer's (0-1 for BLEU, METEOR, ROUGE-L)."""
    return {"BLEU": scores["bleu"] / 100, "NIST": scores["nist"], "METEOR": scores["meteor"] / 100,
            "ROUGE_L": scores["rouge_l"] / 100, "CIDEr": scores["cider"]}


@needs_example
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


def test_outputs_out_of_step_with_references():
    with pytest.raises(ValueError, match="2 system outputs for 3 reference groups"):
        e2e_scores(["a", "b"], REFS)
    with pytest.raises(ValueError, match="have no reference"):
        e2e_scores(["a", "b"], [["x"], [""]])


def test_missing_java_is_named(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="java was not found.*default-jre-headless"):
        e2e_scores(["a"], [["a"]])


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


@needs_example
def test_score_command_prints_json_last():
    proc = subprocess.run([sys.executable, "scripts/score_e2e.py", str(EXAMPLE / "devel-conc.txt"),
                           str(EXAMPLE / "baseline-output.txt")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout.strip().splitlines()[-1])
    assert scores["bleu"] == pytest.approx(72.03, abs=0.01) and scores["nist"] == pytest.approx(7.8212, abs=1e-3)
    bad = subprocess.run([sys.executable, "scripts/score_e2e.py", str(EXAMPLE / "devel-conc.txt"),
                          str(EXAMPLE / "expected.json")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "system outputs for 10 reference groups" in bad.stderr


@needs_example
def test_evaluate_modules_load_from_the_checkout():
    import evaluate

    e2e = evaluate.load(str(ROOT / "metrics" / "e2e_nlg"))
    refs = read_references(EXAMPLE / "devel-conc.txt")
    scores = e2e.compute(predictions=read_outputs(EXAMPLE / "baseline-output.txt"), references=refs)
    assert scores["cider"] == pytest.approx(2.303943135258847, abs=1e-9)
    glue = evaluate.load(str(ROOT / "metrics" / "glue_tasks"), "mrpc")
    got = glue.compute(predictions=[[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], references=[1, 0, 0, 0])
    assert got == pytest.approx({"accuracy": 75.0, "f1": 100 * 2 / 3})
