"""Train-step time and memory: frozen floor vs PEFT LoRA vs PEFT FourierFT vs ours (each path).

Each method is built and timed in its own process (one model resident, nothing left over from another method), on
the same random-init model with q and v adapted; processes run in interleaved rounds (every method once per round)
so that machine drift hits each alike, and the table gives the median and the minimum over all timed steps.
A step is forward + backward + AdamW. Writes results/bench/<device>.json and .md, with the CPU features that
decide bf16 speed (avx512_bf16, amx) when on CPU.

python -m scripts.bench [--shapes roberta_base llama7b] [--dtypes fp32 bf16] [--rounds 3] [--steps 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

import fourierft as ff
from experiments.shared.provenance import git_commit
from experiments.shared.results import write_json_atomic
from fourierft.files import write_atomic

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
OURS = ("ours_auto", "ours_merged", "ours_spectral", "ours_dense")
METHODS = ("floor", "lora_peft", "fourierft_peft") + OURS


def shapes(device: str) -> dict:
    """Model shapes and batch per device; CPU runs fewer layers and tokens so a full bench fits minutes."""
    gpu = device == "cuda"
    return {
        "roberta_base": dict(kind="roberta", hidden=768, layers=12 if gpu else 2, heads=12, ffn=3072,
                             batch=32 if gpu else 8, seq=128, vocab=50265 if gpu else 1000),
        "llama7b": dict(kind="llama", hidden=4096, layers=4 if gpu else 1, heads=32, ffn=11008,
                        batch=4 if gpu else 1, seq=512 if gpu else 128, vocab=32000 if gpu else 1000),
    }


def build(shape: dict, dtype, device):
    from transformers import LlamaConfig, LlamaModel, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    if shape["kind"] == "roberta":
        config = RobertaConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"],
                               num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                               intermediate_size=shape["ffn"], max_position_embeddings=shape["seq"] + 2)
        model, targets = RobertaModel(config, add_pooling_layer=False), ["query", "value"]
    else:
        config = LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
                             num_attention_heads=shape["heads"], intermediate_size=shape["ffn"],
                             max_position_embeddings=shape["seq"])
        model, targets = LlamaModel(config), ["q_proj", "v_proj"]
    return model.to(device=device, dtype=dtype), targets


def prepare(method: str, model: nn.Module, targets: list, n: int):
    for p in model.parameters():
        p.requires_grad_(False)
    if method == "lora_peft":
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    elif method == "fourierft_peft":
        import peft

        model = peft.get_peft_model(model, peft.FourierFTConfig(n_frequency=n, scaling=150.0, target_modules=targets))
    elif method.startswith("ours"):
        model = ff.apply_fourierft(model, ff.FourierFTConfig(n=n, scaling=150.0, target_modules=targets,
                                                             path=method.split("_")[1]))
    # every method, the floor too, sends gradients into the embeddings' output, as adapters force
    model.get_input_embeddings().register_forward_hook(lambda m, i, out: out.requires_grad_(True))
    return model


class SavedBytes:
    """Bytes autograd keeps for backward (distinct storages): the memory a training path holds per step."""

    def __init__(self):
        self.storages = {}

    def pack(self, t):
        if t.device.type != "meta":
            s = t.untyped_storage()
            self.storages[(s.data_ptr(), t.device)] = s.nbytes()
        return t

    def __enter__(self):
        self.ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self.ctx.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.storages.values())


class Contender:
    """One method's model, optimiser and batch, ready to step."""

    def __init__(self, method, shape, dtype, device, n):
        model, targets = build(shape, dtype, device)
        self.method, self.device = method, device
        self.model = prepare(method, model, targets, n)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.trainable, lr=1e-3) if self.trainable else None
        self.ids = torch.randint(0, shape["vocab"], (shape["batch"], shape["seq"]), device=device)
        self.times, self.peak_over = [], 0
        self.weight_bytes = sum(t.numel() * t.element_size() for t in
                                list(self.model.parameters()) + list(self.model.buffers()))

    def step(self):
        out = self.model(input_ids=self.ids).last_hidden_state
        out.float().pow(2).mean().backward()
        if self.opt:
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)

    def timed(self, steps):
        sync = torch.cuda.synchronize if self.device == "cuda" else (lambda: None)
        sync()
        if self.device == "cuda":
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        for _ in range(steps):
            t0 = time.perf_counter()
            self.step()
            sync()
            self.times.append(time.perf_counter() - t0)
        if self.device == "cuda":
            self.peak_over = max(self.peak_over, torch.cuda.max_memory_allocated() - before)

    def row(self):
        with SavedBytes() as saved:
            out = self.model(input_ids=self.ids).last_hidden_state
        del out
        row = {"method": self.method, "step_ms": 1000 * statistics.median(self.times),
               "step_ms_min": 1000 * min(self.times), "steps": len(self.times),
               "trainable": sum(p.numel() for p in self.trainable), "saved_for_backward_mb": saved.total / 2**20}
        if self.device == "cuda":
            # this model's own weights plus the most its training step allocated on top of what was resident
            row["peak_mb"] = (self.weight_bytes + self.peak_over) / 2**20
        return row


def worker(args) -> int:
    """One process, one method: build, warm up, time `steps` steps, print the row as JSON on the last line."""
    shape = json.loads(args.shape_json)
    contender = Contender(args.method, shape, DTYPES[args.dtype], args.device, args.n)
    for _ in range(args.warmup):
        contender.step()
    contender.timed(args.steps)
    row = contender.row()
    row["times_ms"] = [1000 * t for t in contender.times]
    print(json.dumps(row))
    return 0


def bench_group(methods, shape, dtype_name, device, rounds, steps, warmup, n):
    """Every method in its own process, `rounds` times, interleaved; times pooled per method."""
    rows, times, peaks = {}, {m: [] for m in methods}, {m: [] for m in methods}
    for _ in range(rounds):
        for method in methods:
            cmd = [sys.executable, __file__, "--worker", "--method", method, "--shape-json", json.dumps(shape),
                   "--dtype", dtype_name, "--device", device, "--steps", str(steps), "--warmup", str(warmup),
                   "--n", str(n)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"bench worker {method} failed:\n{out.stderr[-2000:]}")
            rows[method] = json.loads(out.stdout.strip().splitlines()[-1])
            times[method] += rows[method].pop("times_ms")
            if "peak_mb" in rows[method]:
                peaks[method].append(rows[method].pop("peak_mb"))
    for method, row in rows.items():
        row.update(step_ms=statistics.median(times[method]), step_ms_min=min(times[method]),
                   steps=len(times[method]), processes=rounds)
        if peaks[method]:
            row["peak_mb"] = max(peaks[method])
    return [rows[m] for m in methods]


def cpu_features() -> dict:
    """The CPU's model name, torch's kernel level, and the flags that decide bf16 speed (native bf16 dot products
    and AMX tiles make bf16 GEMMs fast; without them torch converts and bf16 can be slower than fp32)."""
    info = {"capability": torch.backends.cpu.get_cpu_capability()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        info["model"] = re.search(r"model name\s*:\s*(.*)", text).group(1).strip()
        flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split())
        info["flags"] = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile"})
    except (OSError, AttributeError):
        info["model"] = platform.processor() or "unknown"
    return info


def device_name(device: str) -> str:
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = f"cpu-{platform.machine()}-{os.cpu_count()}cores"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def markdown(rows: list, device: str) -> str:
    mem_key = "peak_mb" if device == "cuda" else "saved_for_backward_mb"
    mem_name = "peak MiB (weights + step)" if device == "cuda" else "saved for backward MiB"
    lines = [f"| shape | dtype | method | step ms (median) | min | x floor | x LoRA | {mem_name} | trainable |",
             "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['dtype']} | {r['method']} | {r['step_ms']:.1f} | {r['step_ms_min']:.1f} | "
                     f"{r['x_floor']:.2f} | {r['x_lora']:.2f} | {r[mem_key]:.0f} | {r['trainable']:,} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", nargs="+", default=["roberta_base", "llama7b"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--rounds", type=int, default=3, help="processes per method, interleaved")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per process (default 5 on GPU, 3 on CPU)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first in each process")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--tiny", action="store_true", help="smoke test: tiny shapes")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--shape-json", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    args.steps = args.steps or (5 if gpu else 3)
    if args.worker:
        return worker(args)
    table = shapes(args.device)
    if args.tiny:
        table = {k: {**v, "hidden": 64, "heads": 4, "ffn": 128, "layers": 1, "batch": 2, "seq": 16, "vocab": 100}
                 for k, v in table.items()}
    rows = []
    for shape_name in args.shapes:
        for dtype_name in args.dtypes:
            group = bench_group(args.methods, table[shape_name], dtype_name, args.device, args.rounds,
                                args.steps, args.warmup, args.n)
            for row in group:
                row.update(shape=shape_name, dtype=dtype_name)
                print(f"{shape_name} {dtype_name} {row['method']}: median {row['step_ms']:.1f} ms, "
                      f"min {row['step_ms_min']:.1f} ms", flush=True)
            floor = next((r["step_ms"] for r in group if r["method"] == "floor"), float("nan"))
            lora = next((r["step_ms"] for r in group if r["method"] == "lora_peft"), float("nan"))
            for r in group:
                r["x_floor"], r["x_lora"] = r["step_ms"] / floor, r["step_ms"] / lora
            rows += group
    name = device_name(args.device) + ("-tiny" if args.tiny else "")
    used = {k: table[k] for k in args.shapes}
    hardware = torch.cuda.get_device_name() if gpu else cpu_features()
    report = {"device": name, "hardware": hardware, "torch": torch.__version__, "git_commit": git_commit(),
              "shapes": used, "n": args.n, "processes_per_method": args.rounds, "steps": args.steps,
              "warmup": args.warmup, "threads": torch.get_num_threads(), "rows": rows}
    write_json_atomic(args.out / f"{name}.json", report)
    md = (f"# Train step on {name} (torch {torch.__version__})\n\nEach method in its own process, {args.rounds} "
          f"processes per method in interleaved rounds, {args.warmup} warm-up + {args.steps} timed steps each; "
          f"median and min over all timed steps.\n\nHardware: {json.dumps(hardware)}\n\n"
          f"Shapes: {json.dumps(used)}\n\n" + markdown(rows, args.device) + "\n")
    write_atomic(args.out / f"{name}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
