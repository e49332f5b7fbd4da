"""The private transformers names the suite relies on, in one place, checked against the installed version.

- Which model configs an Auto class can build is read off its private `_model_mapping` (transformers asks no public
  question for it).
- Trainer refuses to fine-tune a quantized model unless PEFT adapters are attached, which it reads off the private
  attribute `_hf_peft_config_loaded`. FourierFT layers over a 4-bit base are such adapters (they never touch the
  packed weights), so the flag is raised while Trainer checks, and lowered again so that saving stays a plain save."""
from __future__ import annotations

import contextlib
import inspect

PEFT_FLAG = "_hf_peft_config_loaded"
TESTED_MAJOR = 5  # transformers 5.x: Trainer's model check (trainer_utils) reads the flag


def check_supported() -> None:
    """Raise when the installed transformers no longer reads the flag where this shim sets it."""
    import transformers
    from transformers import trainer_utils

    major = int(transformers.__version__.split(".")[0])
    if major != TESTED_MAJOR or PEFT_FLAG not in inspect.getsource(trainer_utils):
        raise RuntimeError(f"transformers {transformers.__version__}: Trainer no longer reads {PEFT_FLAG} as "
                           f"transformers {TESTED_MAJOR}.x did; experiments/shared/hf_compat.py needs updating "
                           "before 4-bit bases can train")


@contextlib.contextmanager
def quantized_adapters_recognised(model, adapted: bool):
    """While the block runs, Trainer sees `model` (quantized, with adapters when `adapted`) as PEFT-adapted."""
    if not (adapted and getattr(model, "is_quantized", False)) or getattr(model, PEFT_FLAG, False):
        yield
        return
    check_supported()
    setattr(model, PEFT_FLAG, True)
    try:
        yield
    finally:
        setattr(model, PEFT_FLAG, False)


def auto_class_builds(auto_class, config) -> bool:
    """Can `auto_class` (AutoModelForCausalLM, ...) build a model from `config`'s class?"""
    mapping = getattr(auto_class, "_model_mapping", None)
    if mapping is None:
        raise RuntimeError(f"{auto_class.__name__} has no _model_mapping in this transformers: "
                           "experiments/shared/hf_compat.py needs updating")
    return type(config) in mapping
