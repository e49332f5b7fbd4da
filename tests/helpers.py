"""What the tests share: the repository's paths and local data, the fast settings and a config composer, tiny random
models of each supported family (no network), and the independent references the core is checked against."""
import copy
import json
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    RobertaConfig,
    RobertaForSequenceClassification,
    ViTConfig,
    ViTForImageClassification,
)
from transformers.pytorch_utils import Conv1D

import experiments  # noqa: F401  (registers the presets of conf/tables/ with Hydra, as python -m experiments.train does)
import fourierft as ff
from fourierft import FourierFTLayer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"  # the datasets that ship with the repository (data/README.md)
GLUE = DATA / "glue"
FASHION = DATA / "fashion_mnist"

# small and quick: every end-to-end test starts from these, then adds its own overrides
FAST = ["logger=none", "trainer.epochs=1", "trainer.batch_size=8", "trainer.max_length=48", "trainer.progress_bar=false",
        "trainer.max_train_samples=16", "trainer.max_eval_samples=16"]
GENERATION_RUN = ["trainer.max_length=64", "trainer.save_strategy=no"]
# two epochs, so that best and last epoch differ in meaning
GLUE_RUN = ["model=tiny_bert", "trainer.max_train_samples=48", "trainer.max_eval_samples=40", "trainer.epochs=2",
            "trainer.batch_size=16"]

def compose_config(*overrides):
    """The composed (unresolved) run config for these command-line overrides."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def local_data(tmp_path) -> list[str]:
    """Overrides that point every family at the data that ships with the repository and write under `tmp_path`."""
    return [f"data.glue_dir={GLUE}", f"data.e2e_dir={DATA / 'e2e_nlg'}",
            f"data.alpaca_file={DATA / 'alpaca' / 'alpaca_5000.json.xz'}", f"data.bench_dir={DATA / 'mt_bench_vicuna'}",
            f"results_dir={tmp_path / 'results'}", f"checkpoint_dir={tmp_path / 'ckpt'}"]


# tiny random models of each supported family, built from configs
def bert():
    return BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=24, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=40, num_labels=3))


def roberta():
    return RobertaForSequenceClassification(RobertaConfig(vocab_size=64, hidden_size=20, num_hidden_layers=2,
                                                          num_attention_heads=2, intermediate_size=36,
                                                          max_position_embeddings=40, num_labels=2))


def gpt2():
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=18, n_layer=2, n_head=2, n_positions=32))


def llama():
    # grouped-query attention: k/v project 24 -> 12, not square
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=24, intermediate_size=44, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))


def vit():
    return ViTForImageClassification(ViTConfig(image_size=16, patch_size=8, hidden_size=24, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=40, num_labels=3))


FAMILIES = {"bert": bert, "roberta": roberta, "gpt2": gpt2, "llama": llama, "vit": vit}


def inputs(family, batch=2, seq=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    if family == "vit":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=g)}
    return {"input_ids": torch.randint(0, 64, (batch, seq), generator=g)}


def build(family, seed=0):
    torch.manual_seed(seed)
    model = FAMILIES[family]()
    model.eval()
    return model


def assert_round_trip(model, family, folder):
    """Give every FourierFT layer random coefficients, save the adapter, load it into a fresh `family` model and
    assert equal logits; the loaded model."""
    import fourierft as ff

    with torch.no_grad():
        for _, layer in ff.fourierft_layers(model):
            layer.coefficients.normal_()
        expected = model(**inputs(family)).logits
    ff.save_adapter(model, folder)
    loaded = ff.load_adapter(build(family), folder)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs(family)).logits, expected)
    return loaded


def reference_delta(entries, coef, d_out, d_in, scaling):
    """alpha * Re(IDFT2(S)) written from the paper's definition, float64, differentiable."""
    u = torch.arange(d_out, dtype=torch.float64)[:, None, None]
    v = torch.arange(d_in, dtype=torch.float64)[None, :, None]
    phase = 2 * torch.pi * (entries[0].double() * u / d_out + entries[1].double() * v / d_in)
    return scaling / (d_out * d_in) * (torch.cos(phase) * coef.double()).sum(-1)


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def make_image_folder(root: Path, classes=("cat", "dog", "fox"), per_split=None, size=(40, 30)) -> Path:
    """A synthetic dataset whose classes differ in colour, in <root>/<split>/<class>/*.png."""
    from PIL import Image

    per_split = per_split or {"train": 12, "test": 6}
    rng = np.random.default_rng(0)
    for split, count in per_split.items():
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 60, (*size[::-1], 3)) + 90 * np.eye(3, dtype=int)[c % 3]
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def vision_config(fast_config, *overrides):
    return fast_config("model=tiny_vit", "trainer.epochs=2", "trainer.save_strategy=no", *overrides)


def read_result(cfg) -> dict:
    files = list(Path(cfg.results_dir).glob("vision/*/*/*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def tiny_llama_folder(folder: Path, context: int = 64) -> Path:
    """A tiny random LLaMA saved with the exact GPT-2 tokenizer (no network); `context`: its position table."""
    import shutil

    from experiments.shared.backbones import gpt2_tokenizer_folder

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=50257, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                                 tie_word_embeddings=True)).save_pretrained(folder)
    for file in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(f"{gpt2_tokenizer_folder()}/{file}", folder / file)
    return folder


def load_4bit(folder):
    """(a 4-bit NF4 model from `folder`, its backbone), through the suite's loader."""
    from transformers import AutoModelForCausalLM

    from experiments.shared.backbones import HubModel

    backbone = HubModel("tiny", str(folder), ["q_proj", "v_proj"], [], "none", load_in_4bit=True)
    model, _ = backbone.load(AutoModelForCausalLM)
    assert model.is_quantized and type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    return model, backbone


def packed(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype == torch.uint8}


def glue_result(task="rte", main="accuracy", best=60.0, last=None, **fields) -> dict:
    """A GLUE results file as the runner writes it (schema, report and selection), with made-up numbers."""
    from experiments.glue.family import Glue
    from experiments.shared.tasks import load_task

    result = {"family": "glue", "task": task, "model": "m", "method": "lora", "variant": "r=8", "seed": 0,
              "config_id": "c", "trainable_params": 10, "head_params": 0, "total_params": 100, "adapter_bytes": 1,
              "selection": {"metric": main, "split": "validation", "mode": "max", "value": best},
              "report": Glue.report.as_dict(load_task(task).display_name), "world_size": 1,
              "effective_batch_size": 8, "wall_time_s": 1.0, "peak_memory": {}, "git_commit": "abc123",
              "git_dirty": False, "versions": {}, "device": "cpu", "config": {}, "main_metric": main,
              "best": {"epoch": 1.0, "metrics": {main: best}},
              "last": {"epoch": 2.0, "metrics": {main: best if last is None else last}}}
    result.update(fields)
    return result


# Shared by the library's test files: the layer's three paths, a layer over a Linear or Conv1D, its check against
# the dense float64 formula, and adapters "trained" by moving every trainable number.
PATHS = ["dense", "merged", "spectral"]


def make_layer(kind, d_out, d_in, n, dtype=torch.float32, path="merged", entries=None, seed=0):
    torch.manual_seed(seed)
    base = nn.Linear(d_in, d_out) if kind == "linear" else Conv1D(d_out, d_in)
    if kind == "conv1d":
        nn.init.normal_(base.weight)
        nn.init.normal_(base.bias)
    base = base.to(dtype)
    for p in base.parameters():
        p.requires_grad_(False)
    if entries is None:
        entries = ff.sample_entries(d_out, d_in, n, seed=seed)
    return FourierFTLayer(base, entries, scaling=7.0, path=path)



def check_layer_against_reference(layer, dtype, tol):
    x = torch.randn(3, 5, layer.d_in, dtype=torch.float64)
    x_ref = x.clone().requires_grad_(True)
    coef_ref = layer.coefficients.detach().double().clone().requires_grad_(True)
    w = layer.weight_view().double()
    b = layer.base_layer.bias.double()
    delta = reference_delta(layer.entries, coef_ref, layer.d_out, layer.d_in, layer.scaling)
    y_ref = x_ref @ (w + delta).T + b
    g = torch.randn_like(y_ref)
    (y_ref * g).sum().backward()

    x_ours = x.to(dtype).requires_grad_(True)
    y = layer(x_ours)
    assert y.dtype == dtype
    (y * g.to(dtype)).sum().backward()
    assert rel_err(y, y_ref) < tol
    assert rel_err(x_ours.grad, x_ref.grad) < tol
    assert rel_err(layer.coefficients.grad, coef_ref.grad) < tol



def trained(family="roberta", **kw):
    base = build(family)
    config = ff.FourierFTConfig(n=kw.pop("n", 20), scaling=40.0, **kw)
    model = ff.apply_fourierft(copy.deepcopy(base), config)
    with torch.no_grad():  # stand-in for training: move every trainable number
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    return base, model



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



def bert_with_head(kind):
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

    cls = {"SEQ_CLS": BertForSequenceClassification, "TOKEN_CLS": BertForTokenClassification}[kind]
    torch.manual_seed(0)
    return cls(BertConfig(vocab_size=64, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=40, num_labels=3)).eval()

