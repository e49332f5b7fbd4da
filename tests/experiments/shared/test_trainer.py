"""The suite's Trainer over a bitsandbytes 4-bit base (CPU backend): it trains FourierFT with the packed weights
untouched, and still refuses a purely quantized model."""
from types import SimpleNamespace

import pytest
import torch
from transformers import TrainingArguments

from experiments.shared.methods import FourierFT
from experiments.shared.trainer import TwoRateTrainer

from helpers import load_4bit, packed


def test_trainer_trains_fourierft_on_a_4bit_base(base_folder, tmp_path):
    from datasets import Dataset

    model, backbone = load_4bit(base_folder)
    method = FourierFT("fourierft", lr=0.5, head_lr=1e-3, n=40, scaling=300.0)
    model = method.apply(model, backbone)
    before, coef = packed(model), {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in coef.values()) == 4 * 40
    torch.manual_seed(1)
    ids = torch.randint(0, 50257, (16, 12)).tolist()
    data = Dataset.from_dict({"input_ids": ids, "labels": ids})
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4,
                             learning_rate=0.5, report_to=[], use_cpu=True, save_strategy="no", logging_steps=1)
    trainer = TwoRateTrainer(model=model, args=args, train_dataset=data, method=method, head=[])
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    after = packed(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)  # W untouched
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, coef[n])]
    assert len(changed) == 4  # every layer's coefficients trained
    assert not getattr(model, "_hf_peft_config_loaded", False)  # the flag Trainer checks is lowered again


def test_trainer_still_refuses_a_purely_quantized_model(base_folder, tmp_path):
    """Only models that carry FourierFT layers get past Trainer's check; a bare 4-bit model is still refused."""
    model, _ = load_4bit(base_folder)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match="purely quantized"):
        TwoRateTrainer(model=model, args=args, method=SimpleNamespace(), head=[])


@pytest.mark.parametrize("overrides,clip,warmup", [
    ((), 1.0, 60),                                                       # defaults: clip at 1, 6% warmup
    (("trainer.max_grad_norm=null", "+trainer.warmup_steps=500"), 0.0, 500),
    (("experiment=glue/roberta_base/mrpc",), 0.0, 60),                   # the authors' GLUE loop: no clipping
    (("experiment=e2e/gpt2_medium", "method=lora"), 0.0, 500),           # the LoRA repository's E2E command
])
def test_clipping_and_warmup_reach_the_trainer(tmp_path, overrides, clip, warmup):
    from experiments.shared.identity import RunIdentity
    from experiments.shared.trainer import training_arguments

    from helpers import compose_config

    cfg = compose_config(f"results_dir={tmp_path}", *overrides)
    args = training_arguments(cfg, RunIdentity.of(cfg, "glue", cfg.task.name), SimpleNamespace(lr=0.1))
    assert args.max_grad_norm == clip and args.get_warmup_steps(1000) == warmup
    if "experiment=glue/roberta_base/mrpc" in overrides:
        assert not (args.bf16 or args.fp16)                               # fp32, as the authors' GLUE code
