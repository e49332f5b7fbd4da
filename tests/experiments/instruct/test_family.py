"""The instruction-tuning family end to end on a tiny LLaMA with a judge on loopback: answering, judging, judging later,
retries, and that no file written holds the API key."""
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from experiments.instruct.data import load_bench
from experiments.instruct.family import rouge_l
from experiments.instruct.judge import OpenAIJudge, grade, load_prompts, parse_rating
from experiments.runner import run

from helpers import DATA


class _Judge(BaseHTTPRequestHandler):
    requests = []
    failures = 0

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Judge.requests.append((self.headers.get("Authorization"), body))
        preflight = body.get("max_tokens") == 1  # the one-token request a run sends before training
        if _Judge.failures > 0 and not preflight:  # a failure: transient (overload, restart) unless failure_code says
            _Judge.failures -= 1
            self.send_response(getattr(_Judge, "failure_code", 503))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        reply = {"choices": [{"message": {"role": "assistant", "content": "Fine answer. Rating: [[7]]"}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Judge.requests.clear()
    _Judge.failures = 0
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_judge_client_on_loopback(judge_server):
    bench = DATA / "mt_bench_vicuna"
    prompts = load_prompts(bench)
    questions, refs = load_bench(bench, "mt_bench")
    math_q = next(q for q in questions if q["category"] == "math")
    writing_q = next(q for q in questions if q["category"] == "writing")
    judge = OpenAIJudge(judge_server, "judge-model", api_key="sk-test")
    graded = grade(judge, prompts, [writing_q, math_q], {writing_q["question_id"]: ["a1", "a2"], math_q["question_id"]: ["b1", "b2"]}, refs)
    assert [g["score"] for g in graded] == [7.0] * 4
    auth, body = _Judge.requests[0]
    assert auth == "Bearer sk-test" and body["model"] == "judge-model" and body["temperature"] == 0
    assert "[Question]\n" + writing_q["turns"][0] in body["messages"][1]["content"]
    # math turns carry the reference answer, second turns the whole conversation
    math_turn2 = _Judge.requests[3][1]["messages"][1]["content"]
    assert refs[math_q["question_id"]][1] in math_turn2 and "b1" in math_turn2 and "b2" in math_turn2


def test_rating_parse():
    assert parse_rating("... Rating: [[8.5]]") == 8.5
    assert parse_rating("Rating: [6]") == 6.0
    assert parse_rating("no score here") == -1.0


@pytest.mark.slow
def test_instruct_runner_answers_and_judges(tmp_path, generation_config, judge_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", judge_server)
    cfg = generation_config("task=alpaca", "model=tiny_llama", "method=fourierft", "method.n=30", "judge=openai",
                 "task.max_questions=2", "task.max_new_tokens=5", "judge.model=stub")
    run(cfg)
    result_file = next((tmp_path / "results").rglob("*seed0.json"))
    result = json.loads(result_file.read_text())
    assert result["metrics"]["mt_bench"] == 7.0 and result["metrics"]["vicuna"] == 7.0
    assert result["questions"] == {"mt_bench": 2, "vicuna": 2}
    answers = [json.loads(l) for l in open(result_file.with_suffix("") / "mt_bench_answers.jsonl")]
    assert all(len(a["turns"]) == 2 for a in answers)  # MT-Bench is two-turn
    # GPT-4 reference answers exist only for math/reasoning/coding questions: none among the first two
    assert result["metrics"]["vicuna_rouge_l"] is None and result["metrics"]["mt_bench_rouge_l"] is None


def test_rouge_l_uses_only_questions_with_references():
    from rouge_score import rouge_scorer

    answers = {1: ["the cat sat", "on the mat"], 2: ["unreferenced"]}
    score = rouge_l(answers, {1: ["a cat sat", "on a mat"]})
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = (scorer.score("a cat sat", "the cat sat")["rougeL"].fmeasure + scorer.score("on a mat", "on the mat")["rougeL"].fmeasure) / 2
    assert score == pytest.approx(100 * expected)


def test_local_judge_reads_rating_from_likelihood_when_format_is_missing():
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from experiments.instruct.judge import LocalJudge
    from experiments.shared.backbones import gpt2_tokenizer_folder

    tok = AutoTokenizer.from_pretrained(gpt2_tokenizer_folder())
    tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=512)).eval()
    judge = LocalJudge(model, tok, max_new_tokens=4)
    context = tok("Judge this.", return_tensors="pt")["input_ids"][0]
    # make one rating overwhelmingly likely by biasing the LM head towards the token "7"
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.transformer.ln_f.bias.zero_()
    seven = tok("7", add_special_tokens=False)["input_ids"][0]
    model.lm_head.bias = torch.nn.Parameter(torch.zeros(len(tok)))
    model.lm_head.bias.data[seven] = 20.0
    assert judge.likeliest_rating(context) == 7
    assert parse_rating(judge([{"role": "user", "content": "Rate it."}])) == 7.0


def test_judge_retries_transient_errors(judge_server):
    _Judge.failures = 2
    judge = OpenAIJudge(judge_server, "m", backoff=0.01)
    assert parse_rating(judge([{"role": "user", "content": "rate"}])) == 7.0
    assert len(_Judge.requests) == 3
    _Judge.failures = 5
    with pytest.raises(RuntimeError, match="answered 503"):
        OpenAIJudge(judge_server, "m", retries=2, backoff=0.01)([{"role": "user", "content": "rate"}])


def test_a_server_that_is_not_a_chat_endpoint_stops_the_run_before_training(tmp_path, generation_config):
    from http.server import SimpleHTTPRequestHandler

    class Plain(SimpleHTTPRequestHandler):  # a plain web server: POST is 501, GET a page
        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Plain)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = generation_config("task=alpaca", "model=tiny_llama", "method.n=30", "judge=openai", "judge.model=stub",
                                f"judge.base_url=http://127.0.0.1:{server.server_address[1]}/v1")
        with pytest.raises(RuntimeError, match=r"refused a one-token chat request with 501.*judge.model='stub'"):
            run(cfg)
    finally:
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "ckpt").exists()

    class Page(Plain):  # answers every POST with a web page
        def do_POST(self):
            page = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

    server = HTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        judge = OpenAIJudge(f"http://127.0.0.1:{server.server_address[1]}/v1", "stub")
        with pytest.raises(RuntimeError, match="answered, but not as an OpenAI-compatible chat endpoint"):
            judge.check()
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_judge_stops_the_run_before_training(tmp_path, generation_config):
    cfg = generation_config("task=alpaca", "model=tiny_llama", "method.n=30", "judge=openai", "judge.model=stub",
                 "judge.base_url=http://127.0.0.1:9/v1")
    with pytest.raises(RuntimeError, match="judge endpoint http://127.0.0.1:9/v1/chat/completions cannot be reached"):
        run(cfg)
    assert not (tmp_path / "ckpt").exists() and not list((tmp_path / "results").rglob("*answers*"))


@pytest.mark.slow
def test_judge_failure_keeps_training_and_answers_and_judging_later_works(tmp_path, generation_config, judge_server):
    common = ["task=alpaca", "model=tiny_llama", "method.n=30", "task.max_questions=1", "task.max_new_tokens=4"]
    # 1) the judge fails after training and answering: adapter and answers stay, no result yet
    _Judge.failures = 100
    failing = generation_config(*common, "judge=openai", "judge.model=stub", f"judge.base_url={judge_server}", "+judge.retries=0")
    with pytest.raises(RuntimeError, match="answered 503"):
        run(failing)
    artifacts = next((tmp_path / "results").rglob("pending.json")).parent
    assert (artifacts / "adapter" / "adapter.safetensors").is_file() and (artifacts / "mt_bench_answers.jsonl").is_file()
    answers = (artifacts / "mt_bench_answers.jsonl").read_text()
    # 2) rerun once the judge is back: it only judges (the saved answers, not new ones)
    _Judge.failures = 0
    run(failing)
    result = json.loads(next((tmp_path / "results").rglob("*seed0.json")).read_text())
    assert result["metrics"]["mt_bench"] == 7.0 and result["judge"] == "openai:stub"
    assert (artifacts / "mt_bench_answers.jsonl").read_text() == answers and not (artifacts / "pending.json").exists()


@pytest.mark.slow
def test_a_run_without_judge_is_judged_later(tmp_path, generation_config, judge_server):
    common = ["task=alpaca", "model=tiny_llama", "method.n=30", "task.max_questions=1", "task.max_new_tokens=4"]
    run(generation_config(*common, "judge=none"))
    result_file = next((tmp_path / "results").rglob("*seed0.json"))
    unjudged = json.loads(result_file.read_text())
    assert unjudged["judge"] is None and "vicuna" not in unjudged["metrics"] and not _Judge.requests
    answers = (result_file.with_suffix("") / "vicuna_answers.jsonl").read_text()
    run(generation_config(*common, "judge=openai", "judge.model=stub", f"judge.base_url={judge_server}"))
    result = json.loads(result_file.read_text())
    assert result["judge"] == "openai:stub" and result["metrics"]["vicuna"] == 7.0
    graded = [body for _, body in _Judge.requests if body["max_tokens"] != 1]
    assert len(graded) == 1 + 2  # one Vicuna turn and two MT-Bench turns, judged once each (after one preflight)
    # judging later trains and answers nothing again: the rest of the result is the unjudged run's
    judged_only = {"metrics", "judge"}
    assert {k: v for k, v in result.items() if k not in judged_only} == \
        {k: v for k, v in unjudged.items() if k not in judged_only}
    assert {k: result["metrics"][k] for k in unjudged["metrics"]} == unjudged["metrics"]
    assert (result_file.with_suffix("") / "vicuna_answers.jsonl").read_text() == answers


@pytest.mark.slow
@pytest.mark.parametrize("given", ["environment", "command line", "command line, multirun"])
def test_no_file_the_suite_writes_holds_the_api_key(tmp_path, judge_server, given):
    import os
    import subprocess
    import sys

    from helpers import FAST, GENERATION_RUN, ROOT, local_data

    secret = "sk-test-" + os.urandom(8).hex()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb"),
           "OPENAI_BASE_URL": judge_server}
    env.pop("OPENAI_API_KEY", None)
    args = [f"hydra.run.dir={tmp_path / 'outputs'}"]
    if given == "environment":
        env["OPENAI_API_KEY"] = secret
    else:  # Hydra saves and logs the command line: the key must reach the run and none of those
        args.append(f"judge.api_key={secret}")
    if given.endswith("multirun"):
        args = ["seed=0", f"judge.api_key={secret}", f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train", *(["-m"] if given.endswith("multirun") else []), *FAST, *GENERATION_RUN, *local_data(tmp_path), "task=alpaca",
         "model=tiny_llama", "method.n=30", "judge=openai", "judge.model=stub", "task.max_questions=1",
         "task.max_new_tokens=4", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hydra_files = {p.name for p in tmp_path.rglob("*.yaml")}
    assert {"config.yaml", "hydra.yaml", "overrides.yaml"} <= hydra_files
    if given.endswith("multirun"):
        assert "multirun.yaml" in hydra_files and "#0 : " in proc.stdout + proc.stderr  # the job's console line
    assert _Judge.requests and all(auth == f"Bearer {secret}" for auth, _ in _Judge.requests)  # it was used
    result = json.loads(next((tmp_path / "results").rglob("*seed0.json")).read_text())
    assert result["config"]["judge"]["api_key"] == "<redacted>"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 5 and any(p.suffix == ".yaml" for p in written)  # results, answers, Hydra's saved config
    leaks = [str(p) for p in written if secret.encode() in p.read_bytes()]
    assert not leaks and secret not in proc.stdout + proc.stderr


@pytest.mark.parametrize("url,allowed", [("http://10.0.0.5:8000/v1", False), ("http://judge.example.com/v1", False),
                                         ("https://judge.example.com/v1", True), ("http://127.0.0.1:8000/v1", True),
                                         ("http://localhost:8000/v1", True), ("http://[::1]:8000/v1", True),
                                         ("ftp://judge/v1", False), ("judge:8000", False)])
def test_plain_http_to_another_machine_is_refused(url, allowed):
    if allowed:
        OpenAIJudge(url, "m")
    else:
        with pytest.raises(ValueError, match="plain http to another machine|is not an http"):
            OpenAIJudge(url, "m")
    if url.startswith("http://"):
        OpenAIJudge(url, "m", allow_insecure_http=True)  # the user said so


@pytest.mark.parametrize("code,tries", [(501, 1), (404, 1), (503, 3)])
def test_only_transient_judge_errors_are_retried(judge_server, monkeypatch, code, tries):
    monkeypatch.setattr(_Judge, "failure_code", code, raising=False)
    _Judge.failures = 2
    judge = OpenAIJudge(judge_server, "m", retries=2, backoff=0.01)
    if tries == 1:
        with pytest.raises(RuntimeError, match=f"answered {code}"):
            judge([{"role": "user", "content": "rate"}])
    else:
        assert "[[7]]" in judge([{"role": "user", "content": "rate"}])
    assert len(_Judge.requests) == tries
