"""The vision family end to end on a tiny random HF ViT, the protocol's epoch selection, and bad input."""
import math
import sys

import pytest

from experiments.runner import run

from helpers import FASHION, make_image_folder, read_result, vision_config


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


def test_tiny_vit_on_a_fashion_mnist_slice(fast_config):
    cfg = vision_config(fast_config, "task=fashion_mnist", "method=fourierft", "method.n=40",
                        "trainer.max_train_samples=32", "trainer.max_eval_samples=20")
    run(cfg)
    result = read_result(cfg)
    assert result["classes"] == 10 and result["data_source"] == str(FASHION)
    assert result["trainable_params"] == 2 * 2 * 40 + 32 * 10 + 10  # q, v in 2 layers + the head
    assert (result["validation_examples"], result["test_examples"]) == (20, 20)


@pytest.mark.parametrize("override,message", [
    ("+task.definition.hub.tset=[zalando-datasets/fashion_mnist,test]", r"hub splits \['tset'\] are not among train, "
                                                                         "validation, test"),
    ("+task.definition.test_fraction=1.5", r"test_fraction=1.5"),
    ("task.definition.num_classes=0", r"num_classes=0"),
    ("+task.definition.num_clases=3", r"task=fashion_mnist \(VisionTask\) takes no 'num_clases': it takes name, "
                                      "display_name, num_classes"),
])
def test_a_typo_in_a_task_definition_is_named(fast_config, override, message):
    cfg = vision_config(fast_config, "task=fashion_mnist", override)
    with pytest.raises(ValueError, match=message):
        run(cfg)


def test_image_folder_task_without_a_folder(fast_config, monkeypatch):
    monkeypatch.delenv("FOURIERFT_IMAGE_DIR", raising=False)
    with pytest.raises(ValueError, match="set data.image_dir"):
        run(vision_config(fast_config, "task=image_folder"))


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

    from helpers import ROOT

    proc = subprocess.run([sys.executable, "-m", "experiments.train", "experiment=vision/vit_base/pets", "logger=none",
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
    cfg = fast_config("experiment=vision/vit_base/pets", f"model.name_or_path={folder}", "data.image_dir=null")
    with pytest.raises(FileNotFoundError, match="vision dataset pets: the Hugging Face hub is unreachable and no "
                                                "local copy was found.*Set data.image_dir=/path"):
        run(cfg)


def test_the_reported_test_accuracy_is_the_best_validation_epochs():
    from experiments.vision.family import best_on_validation, epoch_records

    history = [{"loss": 2.0, "epoch": 0.5},
               {"eval_validation_accuracy": 50.0, "eval_validation_loss": 1.0, "epoch": 1.0},
               {"eval_test_accuracy": 90.0, "epoch": 1.0},
               {"eval_validation_accuracy": 60.0, "epoch": 2.0}, {"eval_test_accuracy": 10.0, "epoch": 2.0},
               {"eval_validation_accuracy": float("nan"), "epoch": 3.0}, {"eval_test_accuracy": 95.0, "epoch": 3.0}]
    epochs = epoch_records(history)
    assert math.isnan(epochs[2].pop("validation_accuracy"))
    assert epochs == [{"epoch": 1.0, "validation_accuracy": 50.0, "test_accuracy": 90.0},
                      {"epoch": 2.0, "validation_accuracy": 60.0, "test_accuracy": 10.0},
                      {"epoch": 3.0, "test_accuracy": 95.0}]
    epochs[2]["validation_accuracy"] = float("nan")
    best = best_on_validation(epochs)
    assert best["epoch"] == 2.0 and best["test_accuracy"] == 10.0  # not the best test epoch, not the NaN one
