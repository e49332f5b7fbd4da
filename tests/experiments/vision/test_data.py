"""Vision data: image folders, Fashion-MNIST idx files, hub columns; damaged sources named; 16-bit images scaled."""
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from experiments.runner import run
from experiments.shared.tasks import load_task
from experiments.vision.data import load_vision, read_image_folder

from helpers import make_image_folder, vision_config


def test_fashion_mnist_idx_reader_and_seeded_validation(tmp_path):
    folder = tmp_path / "fm"
    folder.mkdir()
    write_idx(folder, "train", 50)
    write_idx(folder, "t10k", 10)
    data, source = load_vision(load_task("fashion_mnist"), str(folder), 0.2, seed=3)
    assert [len(data[s]) for s in ("train", "validation", "test")] == [40, 10, 10]
    assert data["train"][0]["image"].size == (28, 28) and source == str(folder)
    again, _ = load_vision(load_task("fashion_mnist"), str(folder), 0.2, seed=3)
    other, _ = load_vision(load_task("fashion_mnist"), str(folder), 0.2, seed=4)
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
    ("empty_class", r"class folders \['wolf'\] under .*train hold no images"),
    ("loose_image", r"train holds files outside any class folder \(stray.png\)"),
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
    elif damage == "empty_class":
        (root / "train" / "wolf").mkdir()
    elif damage == "loose_image":
        shutil.copy(root / "train" / "cat" / "0.png", root / "train" / "stray.png")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        read_image_folder(root)


def test_a_16_bit_image_is_scaled_not_clipped():
    from PIL import Image

    from experiments.vision.transforms import ImageTransform

    ramp = np.tile(np.linspace(0, 65535, 32).round().astype(np.uint16), (32, 1))
    deep = Image.fromarray(ramp)  # a 16-bit grey PNG opens as mode I;16 (or I)
    assert deep.mode.startswith("I")
    eight = Image.fromarray((ramp / 257).round().astype(np.uint8))
    transform = ImageTransform(32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), train=False)
    got, expected = transform(deep), transform(eight)
    assert torch.allclose(got, expected, atol=1 / 255) and got.min() < 0.05 < 0.95 < got.max()


def test_truncated_idx_file_is_refused(tmp_path):
    write_idx(tmp_path, "train", 20, truncate=100)
    write_idx(tmp_path, "t10k", 10)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz is not a whole idx file"):
        load_vision(load_task("fashion_mnist"), str(tmp_path), 0.1, 0)


def test_hub_columns_are_renamed_or_named_when_missing(monkeypatch):
    from datasets import Dataset

    import experiments.vision.data as vision_data

    image = Image.new("RGB", (4, 4))
    tables = {"good": Dataset.from_dict({"img": [image], "fine_label": [3], "extra": ["x"]}),
              "bad": Dataset.from_dict({"pixels": [image], "y": [3]})}
    which = {"table": "good"}
    monkeypatch.setattr(vision_data, "load_dataset", lambda hub_id, split: tables[which["table"]])
    splits = vision_data.read_hub(load_task("pets"))
    assert set(splits) == {"train", "test"} and splits["train"].column_names == ["image", "label"]
    which["table"] = "bad"
    with pytest.raises(ValueError, match=r"timm/oxford-iiit-pet \(train\) has columns \['pixels', 'y'\]"):
        vision_data.read_hub(load_task("pets"))
