"""Bad input, tried as a careless or hostile user would: each ends in a clear error that names the setting, file or
record, or in a correct result. Core first, then the suite."""
import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import fourierft as ff

from conftest import ROOT, compose_config
from models import build, inputs

# ---------------------------------------------------------------------------------------------------- the core


@pytest.mark.parametrize("kwargs,match", [
    ({"target_modules": "(["}, r"target_modules='\(\[' is a string, so a regular expression.*does not compile"),
    ({"target_modules": 5}, "target_modules must be a list of module-name suffixes"),
    ({"modules_to_save": [1]}, r"modules_to_save must hold module names"),
    ({"entry_seed": "x"}, "entry_seed must be an integer"),
    ({"scaling": float("nan")}, "scaling must be a finite number"),
    ({"fused": {"c_attn": []}}, r"fused\['c_attn'\] must list distinct part names"),
    ({"fused": {"c_attn": ["q", "k"]}, "fused_targets": ["v"]}, r"fused_targets=\['v'\] names no part"),
])
def test_bad_config_fields_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ff.FourierFTConfig(**kwargs)


def test_modules_to_save_as_one_string_is_one_module():
    config = ff.FourierFTConfig(n=4, modules_to_save="classifier")
    assert config.modules_to_save == ["classifier"]
    model = ff.apply_fourierft(build("bert"), config)
    assert all(p.requires_grad for p in model.classifier.parameters())


def test_n_pattern_key_matching_nothing():
    with pytest.raises(ValueError, match=r"n_pattern keys \['layer.7.value'\] match none of the adapted modules"):
        ff.apply_fourierft(build("bert"), ff.FourierFTConfig(n=4, n_pattern={"layer.7.value": 8}))


def test_mpnet_is_detected_and_nothing_matched_is_grouped():
    from transformers import MPNetConfig, MPNetForSequenceClassification

    def mpnet():
        return MPNetForSequenceClassification(MPNetConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3,
                                                          num_attention_heads=2, intermediate_size=20))
    model = ff.apply_fourierft(mpnet(), ff.FourierFTConfig(n=4))
    assert [n.rpartition(".")[2] for n, _ in ff.fourierft_layers(model)] == ["q", "v"] * 3
    with pytest.raises(ValueError) as e:
        ff.apply_fourierft(mpnet(), ff.FourierFTConfig(n=4, target_modules=["nope"]))
    assert "mpnet.encoder.layer.*.attention.attn.q (3)" in str(e.value) and "layer.0" not in str(e.value)


def test_frequency_bias_on_a_layer_above_multinomials_limit():
    # 4100 x 4100 = 16.8M positions > 2^24: torch.multinomial refuses it
    entries = ff.sample_entries(4100, 4100, 500, seed=0, fc=50.0, bandwidth=200.0)
    assert entries.shape == (2, 500) and len({tuple(e) for e in entries.T.tolist()}) == 500
    radius = ff.radial_frequency(entries, 4100, 4100)
    assert radius.median() < 400  # drawn around fc, not uniformly (a uniform draw's median radius is ~1900)


def test_merged_path_gives_the_frozen_weight_its_gradient_when_trainable():
    grads = {}
    for path in ("dense", "merged", "spectral"):
        torch.manual_seed(0)
        base = nn.Linear(6, 5)
        layer = ff.FourierFTLayer(base, ff.sample_entries(5, 6, 7, seed=1), scaling=3.0, path=path)
        base.weight.requires_grad_(True)
        layer(torch.randn(4, 6, generator=torch.Generator().manual_seed(2))).pow(2).sum().backward()
        grads[path] = base.weight.grad
    assert grads["merged"] is not None
    assert torch.allclose(grads["merged"], grads["dense"], atol=1e-5)
    assert torch.allclose(grads["spectral"], grads["dense"], atol=1e-5)


def test_model_to_bf16_keeps_coefficients_float32():
    model = ff.apply_fourierft(build("bert"), ff.FourierFTConfig(n=4)).to(torch.bfloat16)
    for _, layer in ff.fourierft_layers(model):
        assert layer.coefficients.dtype == torch.float32 and layer.base_layer.weight.dtype == torch.bfloat16


def trained_bert(n=6, scaling=50.0, **kwargs):
    torch.manual_seed(0)
    model = ff.apply_fourierft(build("bert"), ff.FourierFTConfig(n=n, scaling=scaling, **kwargs))
    with torch.no_grad():
        for _, layer in ff.fourierft_layers(model):
            layer.coefficients.normal_()
    return model


def logits(model):
    with torch.no_grad():
        return model(**inputs("bert")).logits


def test_loading_into_a_wrapped_or_merged_model_applies_the_files_settings(tmp_path):
    saved = trained_bert(scaling=50.0, modules_to_save=["classifier"])
    with torch.no_grad():
        saved.classifier.weight.add_(1.0)
    ff.save_adapter(saved, tmp_path)
    expected = logits(saved)
    other = trained_bert(scaling=7.0)  # its own alpha, no modules_to_save
    ff.load_adapter(other, tmp_path)
    assert torch.allclose(logits(other), expected, atol=1e-6)
    assert other.fourierft_config.scaling == 50.0 and all(p.requires_grad for p in other.classifier.parameters())
    merged = ff.merge(trained_bert(scaling=7.0))
    ff.load_adapter(merged, tmp_path)
    assert torch.allclose(logits(merged), expected, atol=1e-5)
    assert not any(layer.merged for _, layer in ff.fourierft_layers(merged))


def rewrite_meta(path, **changes):
    meta = json.loads((path / "adapter_config.json").read_text())
    meta.update(changes)
    (path / "adapter_config.json").write_text(json.dumps(meta))
    return meta


def test_edited_config_is_refused(tmp_path):
    ff.save_adapter(trained_bert(), tmp_path)
    meta = json.loads((tmp_path / "adapter_config.json").read_text())
    meta["config"]["scaling"] = 500.0
    (tmp_path / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="was edited after it was saved"):
        ff.load_adapter(build("bert"), tmp_path)


def test_other_checkpoint_is_refused_unless_asked(tmp_path):
    model = trained_bert()
    model.config.name_or_path = "google-bert/bert-base-uncased"
    ff.save_adapter(model, tmp_path)
    other = build("bert")
    other.config.name_or_path = "/models/bert-base-cased"
    with pytest.raises(ValueError, match=r"trained on 'google-bert/bert-base-uncased'.*check_base=False"):
        ff.load_adapter(other, tmp_path)
    same = build("bert")
    same.config.name_or_path = "/local/copies/bert-base-uncased/"  # a local copy of the same checkpoint
    ff.load_adapter(same, tmp_path)
    ff.load_adapter(other, tmp_path, check_base=False)


def test_nan_coefficients_are_neither_saved_nor_loaded(tmp_path):
    model = trained_bert()
    layer = next(layer for _, layer in ff.fourierft_layers(model))
    with torch.no_grad():
        layer.coefficients[0] = float("nan")
    with pytest.raises(ValueError, match="hold NaN or inf.*training diverged; the adapter was not saved"):
        ff.save_adapter(model, tmp_path)
    # a file another tool wrote with NaN inside (checksums made to agree)
    ff.save_adapter(trained_bert(), tmp_path)
    tensors = load_file(str(tmp_path / "adapter.safetensors"))
    key = next(k for k in tensors if k.startswith("coefficients/"))
    tensors[key][0] = float("inf")
    save_file(tensors, str(tmp_path / "adapter.safetensors"), metadata={"format": "fourierft-adapter"})
    from fourierft.io import _described_sha256, _sha256

    meta = rewrite_meta(tmp_path, sha256=_sha256(tmp_path / "adapter.safetensors"))
    rewrite_meta(tmp_path, config_sha256=_described_sha256(meta))
    with pytest.raises(ValueError, match="holds NaN or inf in coefficients/"):
        ff.load_adapter(build("bert"), tmp_path)


@pytest.mark.parametrize("content,match", [
    ("[1, 2]", "is not a fourierft-adapter file"),
    ('{"format": "fourierft-adapter"}', "lacks version, config, base_model, sha256"),
    ("{not json", "is not valid JSON"),
])
def test_malformed_adapter_json(tmp_path, content, match):
    ff.save_adapter(trained_bert(), tmp_path)
    (tmp_path / "adapter_config.json").write_text(content)
    with pytest.raises(ValueError, match=match):
        ff.load_adapter(build("bert"), tmp_path)


@pytest.mark.parametrize("field,value,match", [
    ("version", "one", "adapter format version 'one' is not one this library reads"),
    ("base_model", ["BertForSequenceClassification"], "base_model must record the model class and its layers"),
    ("config", {"n": "many"}, r"FourierFTConfig.n must be a positive integer, got 'many'"),
    ("config", {"alpha": 3}, r"unknown FourierFTConfig fields \['alpha'\]"),
    ("config", [1], "a FourierFTConfig is a JSON object of fields, got list"),
])
def test_wrongly_typed_adapter_fields(tmp_path, field, value, match):
    ff.save_adapter(trained_bert(), tmp_path)
    meta = json.loads((tmp_path / "adapter_config.json").read_text())
    meta[field] = value
    del meta["config_sha256"]  # as an older or hand-written file: the field checks must still catch it
    (tmp_path / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=match):
        ff.load_adapter(build("bert"), tmp_path)


def test_export_records_the_task_type_for_auto_classes(tmp_path):
    from peft import AutoPeftModelForCausalLM

    base = build("llama")
    base.save_pretrained(tmp_path / "base")
    model = copy.deepcopy(base)
    model.config.name_or_path = str(tmp_path / "base")
    ff.apply_fourierft(model, ff.FourierFTConfig(n=10, scaling=40.0))
    with torch.no_grad():
        for _, layer in ff.fourierft_layers(model):
            layer.coefficients.normal_()
    ff.export_peft(model, tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    loaded = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs("llama")).logits, model(**inputs("llama")).logits, atol=1e-5)


def test_merge_unmerge_is_exact_in_float32():
    model = trained_bert()
    weights = {n: layer.base_layer.weight.clone() for n, layer in ff.fourierft_layers(model)}
    ff.unmerge(ff.merge(model))
    for name, layer in ff.fourierft_layers(model):
        assert torch.allclose(layer.base_layer.weight, weights[name], atol=1e-6)

# ---------------------------------------------------------------------------------------------------- the suite


def make_run(*overrides):
    from experiments.shared.run import Run

    cfg = compose_config("model=tiny_bert", "logger=none", *overrides)
    return Run(cfg, "glue", cfg.task.name)


@pytest.mark.parametrize("override,named", [
    ("method.lr=nan", "method.lr=nan (accepted: a finite number > 0)"),
    ("method.lr=-1", "method.lr=-1 (accepted: a finite number > 0)"),
    ("method.lr=abc", "method.lr='abc' (accepted: a finite number > 0)"),
    ("method.head_lr=0", "method.head_lr=0"),
    ("method.weight_decay=-0.1", "method.weight_decay=-0.1"),
    ("method.n=0", "method.n=0 (accepted: an integer >= 1)"),
    ("method.scaling=0", "method.scaling=0"),
    ("method.fc=-5", "method.fc=-5"),
    ("trainer.epochs=0", "trainer.epochs=0 (accepted: a finite number > 0)"),
    ("trainer.max_length=0", "trainer.max_length=0"),
    ("trainer.grad_accum=0", "trainer.grad_accum=0"),
    ("trainer.batch_size=0", "trainer.batch_size=0"),
    ("trainer.eval_batch_size=-2", "trainer.eval_batch_size=-2"),
    ("trainer.max_train_samples=0", "trainer.max_train_samples=0 (accepted: null or an integer >= 1)"),
    ("trainer.max_train_samples=-1", "trainer.max_train_samples=-1"),
    ("trainer.max_eval_samples=0", "trainer.max_eval_samples=0"),
    ("trainer.warmup_ratio=1.5", "trainer.warmup_ratio=1.5 (accepted: a number in [0, 1))"),
    ("trainer.max_steps=0", "trainer.max_steps=0"),
    ("trainer.max_grad_norm=0", "trainer.max_grad_norm=0"),
    ("seed=abc", "seed='abc' (accepted: an integer >= 0)"),
    ("seed=-1", "seed=-1"),
    ("seed=1.5", "seed=1.5"),
])
def test_nonsense_settings_stop_before_anything_loads(override, named):
    with pytest.raises(ValueError, match="invalid settings, nothing was loaded or trained") as e:
        make_run(override)
    assert named in str(e.value)


@pytest.mark.parametrize("method,override,named", [
    ("lora", "method.r=0", "method.r=0"), ("lora", "method.dropout=1", "method.dropout=1"),
    ("lora", "method.alpha=-8", "method.alpha=-8")])
def test_nonsense_method_settings(method, override, named):
    with pytest.raises(ValueError, match="invalid settings") as e:
        make_run(f"method={method}", override)
    assert named in str(e.value)


def test_mistyped_preset_lists_the_available_ones():
    proc = subprocess.run([sys.executable, "-m", "experiments.train", "experiment=glue/roberta_base/mrcp"],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0
    assert "unknown experiment preset 'glue/roberta_base/mrcp'; available:" in proc.stderr
    assert "glue/roberta_base/mrpc" in proc.stderr


def test_max_length_beyond_the_position_table_is_clipped(caplog):
    from transformers import AutoModelForSequenceClassification

    from experiments.shared.backbones import usable_length

    cfg = compose_config("model=tiny_bert")
    from hydra.utils import instantiate

    model, tokenizer = instantiate(cfg.model).load(AutoModelForSequenceClassification, num_labels=2)
    assert usable_length(512, model, tokenizer) == 128 and "exceeds bert's 128 positions" in caplog.text
    assert usable_length(64, model, tokenizer) == 64
    from transformers import RobertaConfig, RobertaForSequenceClassification

    roberta = RobertaForSequenceClassification(RobertaConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
                                                             num_attention_heads=2, intermediate_size=8,
                                                             max_position_embeddings=514))  # as roberta-base
    assert usable_length(1000, roberta, None) == 512  # 514 positions, two taken by the padding offset


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
    from experiments.glue.data import get_task, read_tsv

    with pytest.raises(ValueError, match=match):
        read_tsv(tsv(tmp_path, folder, text), get_task(task))


@pytest.mark.parametrize("content,match", [
    ('{"instruction": "x", "output": "y"}', "holds a JSON dict; expected a non-empty list"),
    ("[]", "holds an empty list"),
    ('[{"instruction": "x"}]', r"record 0: output missing or not text"),
    ('[{"instruction": "x", "output": "y"}, {"instruction": 3, "output": "y"}]', "record 1: instruction missing"),
    ('[{"instruction": "x", "output": "y"}, "text"]', "record 1: a str, expected an object"),
    ('[{"instruction": "x", "output": "y"', "is not valid JSON"),
])
def test_broken_alpaca_file_names_file_and_record(tmp_path, content, match):
    from experiments.instruct.data import read_alpaca

    path = tmp_path / "alpaca.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        read_alpaca(path)


def test_a_nan_first_epoch_is_never_best():
    from experiments.shared.run import best_epoch

    epochs = [{"epoch": 1.0, "pearson": float("nan")}, {"epoch": 2.0, "pearson": 12.0}]
    assert best_epoch(epochs, "pearson")["epoch"] == 2.0
    with pytest.raises(FloatingPointError, match="every dev evaluation gave pearson=nan"):
        best_epoch(epochs[:1], "pearson")


def test_a_second_start_of_the_same_run_is_refused_and_a_dead_holder_is_taken_over(tmp_path):
    code = ("import sys, time; sys.path.insert(0, 'tests'); from test_bad_input import make_run; "
            f"make_run('results_dir={tmp_path}').finished(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RuntimeError, match=rf"already in progress \(process {holder.pid} on .* holds"):
        make_run(f"results_dir={tmp_path}").finished()
    holder.kill()  # a dead holder: the OS drops its lock, the run can be taken over
    holder.wait()
    assert make_run(f"results_dir={tmp_path}").finished() is None
    assert make_run(f"results_dir={tmp_path}").finished() is None  # held by this process already: no self-deadlock


def test_leftover_temporary_files_are_removed(tmp_path):
    run = make_run(f"results_dir={tmp_path}")
    run.result_file.parent.mkdir(parents=True)
    stale = run.result_file.parent / f".{run.result_file.name}.abc123.tmp"
    stale.write_text("{half")
    run.finished()
    assert not stale.exists()


@pytest.mark.slow
def test_diverging_training_stops_with_a_clear_error(fast_config):
    from experiments.glue.recipe import run

    cfg = fast_config("model=tiny_bert", "task=rte", "method.n=16", "method.lr=1e30", "trainer.max_grad_norm=1e30",
                      "trainer.logging_steps=1", "trainer.max_train_samples=48")
    with pytest.raises(FloatingPointError, match=r"training loss became nan .*method.lr=1e\+30"):
        run(cfg)


@pytest.mark.slow
def test_overwrite_trains_again_instead_of_reloading_checkpoints(fast_config, tmp_path):
    from experiments.glue.recipe import run

    cfg = fast_config("model=tiny_bert", "task=rte", "method.n=16", "trainer.keep_checkpoints=true")
    run(cfg)
    folder = next((tmp_path / "ckpt").iterdir())
    (folder / "marker").write_text("from the first run")
    run(fast_config("model=tiny_bert", "task=rte", "method.n=16", "trainer.keep_checkpoints=true", "overwrite=true"))
    assert not (folder / "marker").exists()  # the old checkpoints were dropped, not resumed from


def test_wall_time_counts_the_segments_before_a_resume(tmp_path):
    run = make_run(f"results_dir={tmp_path}", f"checkpoint_dir={tmp_path / 'ckpt'}")
    run.elapsed_file.parent.mkdir(parents=True)
    run.elapsed_file.write_text('{"seconds": 1234.5}')  # what the killed segment recorded at its last checkpoint
    run.finished()
    assert 1234.5 <= run.elapsed() < 1234.5 + 60


def test_quantized_base_layers_refuse_merging():
    class Packed(nn.Linear):  # as bitsandbytes' Linear4bit: an nn.Linear whose weight is packed integers
        def __init__(self):
            super().__init__(8, 8)
            self.weight = nn.Parameter(torch.zeros(32, 1, dtype=torch.uint8), requires_grad=False)

    with pytest.raises(ValueError, match="path='merged'.*quantized base layer \\(Packed\\)"):
        ff.apply_fourierft(nn.Sequential(Packed()), ff.FourierFTConfig(n=4, target_modules=["0"], path="merged"))
    model = ff.apply_fourierft(nn.Sequential(Packed()), ff.FourierFTConfig(n=4, target_modules=["0"]))
    assert model[0].quantized  # adapted beside the packed weight (tests/test_quantized.py trains such a base)
    with pytest.raises(TypeError, match="base layer is quantized \\(Packed\\): dW cannot be added to packed"):
        ff.merge(model)
    with pytest.raises(TypeError, match="cannot dequantize a Packed weight of dtype torch.uint8"):
        ff.merge(model, dequantize=True)
