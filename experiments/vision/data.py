"""The vision family's datasets: the paper's eight from the hub ids its reference code loads, Fashion-MNIST from
Debian's idx files, or any local image folder (<dir>/<split>/<class>/<image>). Every source gives the same three
splits, train / validation / test, with an `image` and a `label` column."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Optional

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, load_dataset

from ..shared.sources import resolve_source
from .task import VisionTask

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VALIDATION_NAMES = ("validation", "val")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
             # not in the official release: a folder that fixes its validation split (the repository's data/)
             "validation": ("validation-images-idx3-ubyte", "validation-labels-idx1-ubyte")}


def load_vision(task: VisionTask, image_dir: Optional[str], validation_fraction: float,
                seed: int) -> tuple[DatasetDict, str]:
    """(train / validation / test, where they came from). Where a source has no validation split,
    `validation_fraction` of train becomes one, drawn with `seed` (the reference code's split was unseeded)."""
    if not task.hub and not image_dir:
        raise ValueError(f"task={task.name} reads your own images: set data.image_dir=<dir> (or FOURIERFT_IMAGE_DIR) "
                         "to a folder with train/<class>/<image> and test/<class>/<image>")
    spec = task if task.hub else None
    splits, source = resolve_source(
        f"vision dataset {task.name}", setting="data.image_dir", env="FOURIERFT_IMAGE_DIR",
        expects="a folder with train/ and test/ (and optionally validation/), one sub-folder of images per class",
        configured=image_dir, configured_kind="folder", local=read_local,
        hub=(lambda: read_hub(spec)) if spec else None, hub_id=str(spec.hub) if spec else "",
        fallbacks=task.fallback_dirs)
    if "test" not in splits:
        splits["train"], splits["test"] = _cut(splits.pop("train"), task.test_fraction, seed)
    if "validation" not in splits:
        splits["train"], splits["validation"] = _cut(splits["train"], validation_fraction, seed)
    if task.num_classes and not image_dir and isinstance(splits["train"].features["label"], ClassLabel):
        classes = splits["train"].features["label"].num_classes
        if classes != task.num_classes:
            raise ValueError(f"{task.name} from {source} has {classes} classes, expected {task.num_classes}")
    return DatasetDict({s: splits[s] for s in ("train", "validation", "test")}), source


def _cut(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(rest, a seeded `fraction` of `data`), stratified by class where labels are a ClassLabel."""
    stratify = "label" if isinstance(data.features["label"], ClassLabel) else None
    cut = data.train_test_split(test_size=fraction, seed=seed, stratify_by_column=stratify)
    return cut["train"], cut["test"]


def read_hub(spec: VisionTask) -> dict:
    """The hub's splits with columns renamed to image / label."""
    out = {}
    for split, (hub_id, hub_split) in spec.hub.items():
        data = load_dataset(hub_id, split=hub_split)
        image = next((c for c in data.column_names if c in ("image", "img")), None)
        label = next((c for c in data.column_names if c in ("label", "labels", "fine_label")), None)
        if image is None or label is None:
            raise ValueError(f"{hub_id} ({hub_split}) has columns {data.column_names}: no image / label column "
                             "(expected image or img, and label, labels or fine_label)")
        data = data.select_columns([image, label]).rename_columns({image: "image", label: "label"})
        out[split] = data
    return out


def read_local(path: Path) -> dict:
    if any((path / (f + ".gz")).exists() or (path / f).exists() for f in IDX_FILES["train"]):
        return read_idx(path)
    return read_image_folder(path)


def read_idx(folder: Path) -> dict:
    """Fashion-MNIST (or MNIST) idx files, gzipped or not, as grey PIL-decodable images: train and test, and a
    validation split where the folder has one."""
    features = Features({"image": Image(), "label": ClassLabel(names=FASHION_MNIST_CLASSES)})
    out = {}
    for split, (images_file, labels_file) in IDX_FILES.items():
        if split == "validation" and not any((folder / (f + z)).exists() for f in IDX_FILES[split]
                                             for z in ("", ".gz")):
            continue
        images, labels = _idx_array(folder, images_file), _idx_array(folder, labels_file)
        if len(images) != len(labels) or images.ndim != 3:
            raise ValueError(f"{folder}: {images_file} holds {len(images)} images of shape {images.shape[1:]} but "
                             f"{labels_file} {len(labels)} labels")
        if labels.max() >= len(FASHION_MNIST_CLASSES):
            raise ValueError(f"{folder}/{labels_file}: label {labels.max()} is outside the 10 Fashion-MNIST classes")
        out[split] = Dataset.from_dict({"image": list(images), "label": labels.tolist()}, features=features)
    return out


def _idx_array(folder: Path, stem: str) -> np.ndarray:
    path = folder / (stem + ".gz") if (folder / (stem + ".gz")).exists() else folder / stem
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no {stem}[.gz] (Fashion-MNIST idx files)")
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    try:
        zero, kind, dims = struct.unpack(">HBB", raw[:4])
        shape = struct.unpack(f">{dims}I", raw[4:4 + 4 * dims])
    except struct.error:
        raise ValueError(f"{path} is not an idx file (too short)") from None
    if zero != 0 or kind != 0x08 or len(raw) != 4 + 4 * dims + int(np.prod(shape)):
        raise ValueError(f"{path} is not a whole idx file of unsigned bytes (truncated or another format)")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def read_image_folder(root: Path) -> dict:
    """<root>/<split>/<class>/<image>: train and test required, validation (or val) optional; every split uses
    train's classes. A file that is not an image stops the load with its path."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    split_dirs = {"train": root / "train", "test": root / "test"}
    given = [root / n for n in VALIDATION_NAMES if (root / n).is_dir()]
    if given:
        split_dirs["validation"] = given[0]
    for split in ("train", "test"):
        if not split_dirs[split].is_dir():
            raise FileNotFoundError(f"{root} has no {split}/ folder (expected {root}/{split}/<class>/<image>)")
    classes = sorted(p.name for p in split_dirs["train"].iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{split_dirs['train']} has no class folders (expected train/<class>/<image>)")
    for folder in split_dirs.values():
        loose = sorted(f.name for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
        if loose:
            raise ValueError(f"{folder} holds files outside any class folder ({', '.join(loose[:3])}"
                             f"{', ...' if len(loose) > 3 else ''}): move each into {folder}/<class>/")
    empty = [c for c in classes if not any(f.is_file() and not f.name.startswith(".")
                                           for f in (split_dirs["train"] / c).rglob("*"))]
    if empty:
        raise ValueError(f"class folders {empty} under {split_dirs['train']} hold no images: the head would get "
                         "classes it never sees; remove them or add images")
    features = Features({"image": Image(), "label": ClassLabel(names=classes)})
    out = {}
    for split, folder in split_dirs.items():
        paths, labels = [], []
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            if class_dir.name not in classes:
                raise ValueError(f"{class_dir}: class {class_dir.name!r} is not among train's classes {classes}")
            for file in sorted(f for f in class_dir.rglob("*") if f.is_file() and not f.name.startswith(".")):
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    raise ValueError(f"{file} is not an image (accepted: {', '.join(sorted(IMAGE_SUFFIXES))})")
                try:
                    with PILImage.open(file) as image:
                        image.verify()
                except (UnidentifiedImageError, OSError, SyntaxError) as e:
                    raise ValueError(f"{file} cannot be read as an image: {e}") from None
                paths.append(str(file))
                labels.append(classes.index(class_dir.name))
        if not paths:
            raise ValueError(f"{folder} holds no images (expected {folder}/<class>/<image>)")
        out[split] = Dataset.from_dict({"image": paths, "label": labels}, features=features)
    return out
