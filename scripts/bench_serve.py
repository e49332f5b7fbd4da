"""Mixed-adapter serving: prefill and decode time and resident memory for a batch of 64 rows using K distinct adapters
out of R resident, for FourierFT (fourierft.MixedAdapters) against the base model alone (the floor), PEFT LoRA r=8
with `adapter_names` on the same model and batch, a loop over the distinct adapters with our single-adapter path, and
merging each adapter into the weights for its rows.

Each (method, R) is built and timed in its own process, processes in interleaved rounds (every contender once per
round), median and minimum over all timed steps, as scripts/bench.py does. Row i of the batch uses adapter i % K.
Prefill: one forward of the batch (creating the KV cache on a decoder). Decode: one new token per row with the KV
cache. An encoder (RoBERTa) has no decode. Writes results/bench/serve-<device>.json and .md.

python -m scripts.bench_serve [--shapes roberta_base llama7b] [--rounds 2] [--steps 3]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import fourierft as ff
from experiments.shared.provenance import git_commit
from experiments.shared.results import write_json_atomic
from fourierft.adapter import read_adapter
from fourierft.files import write_atomic
from scripts.bench import build, cpu_features, device_name  # the same models

ROWS = 64
KS = (1, 8, 64)
DISTINCT = 64  # adapter files written; resident adapter i is file i % DISTINCT (timing does not read the numbers)
LORA_MOST = 100  # PEFT's add_adapter walks every module per call: 41 ms per add at R=100, 149 ms at R=300 here


def shapes(device: str) -> dict:
    """bench.py's shapes with 64 rows; the prompt is shorter on CPU so a round fits minutes."""
    gpu = device == "cuda"
    return {
        "roberta_base": dict(kind="roberta", hidden=768, layers=12 if gpu else 2, heads=12, ffn=3072,
                             seq=128 if gpu else 32, vocab=50265 if gpu else 1000),
        "llama7b": dict(kind="llama", hidden=4096, layers=4 if gpu else 1, heads=32, ffn=11008,
                        seq=128 if gpu else 8, vocab=32000 if gpu else 1000),
    }


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def write_adapters(model, targets, n, folder: Path, count: int) -> list[Path]:
    """`count` FourierFT adapters of one entry draw (seed 2024), random coefficients; saved once per machine."""
    folders = [folder / f"a{i}" for i in range(count)]
    if all((f / "adapter.safetensors").is_file() for f in folders):
        return folders
    wrapped = ff.apply_fourierft(copy.deepcopy(model), ff.FourierFTConfig(n=n, scaling=150.0, target_modules=targets))
    for f in folders:
        with torch.no_grad():
            for _, layer in ff.fourierft_layers(wrapped):
                layer.coefficients.normal_(0, 0.02)
        ff.save_adapter(wrapped, f)
    return folders


class Contender:
    """One method with R adapters resident: `step(phase, k)` runs prefill or decode for the batch using k adapters."""

    def __init__(self, method, shape, device, resident, n, adapter_dir):
        self.method, self.device, self.resident = method, device, resident
        model, targets = build(shape, torch.float32, device)
        model.eval()
        self.decoder = shape["kind"] == "llama"
        self.ids = torch.randint(0, shape["vocab"], (ROWS, shape["seq"]), device=device,
                                 generator=torch.Generator(device).manual_seed(0))
        self.next_ids = self.ids[:, -1:].clone()
        folders = write_adapters(model, targets, n, adapter_dir, DISTINCT) if method.startswith("ours") or \
            method == "merge" else []
        self.names = [f"a{i}" for i in range(resident)]
        before = rss_bytes()
        start = time.perf_counter()
        if method == "floor":
            self.model = model
        elif method == "ours_mixed":
            self.serve = ff.MixedAdapters(model, {name: folders[i % DISTINCT] for i, name in enumerate(self.names)})
            self.model = self.serve.model
        elif method in ("ours_loop", "merge"):
            # R coefficient sets in memory, one at a time in the layers (what a loop over load_adapter would do,
            # without re-reading files)
            self.model = ff.load_adapter(model, folders[0])
            layers = dict(ff.fourierft_layers(self.model))
            sets = [read_adapter(f)[1] for f in folders[:min(resident, DISTINCT)]]
            self.sets = [{n: sets[i % len(sets)][f"coefficients/{n}"] for n in layers} for i in range(resident)]
            self.layers = layers
        elif method == "lora_peft":
            import peft

            config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False)
            self.model = peft.get_peft_model(model, config, adapter_name=self.names[0])
            for name in self.names[1:]:
                self.model.add_adapter(name, config)
            self.model.eval()
        self.load_s = time.perf_counter() - start
        self.resident_bytes = rss_bytes() - before
        self.adapter_bytes = self._adapter_bytes()
        self.times = {}

    def _adapter_bytes(self) -> int:
        if self.method == "ours_mixed":
            return self.serve.resident_bytes()
        if self.method == "lora_peft":
            return sum(p.numel() * p.element_size() for n, p in self.model.named_parameters() if "lora_" in n)
        if self.method in ("ours_loop", "merge"):
            return sum(t.numel() * t.element_size() for s in self.sets for t in s.values())
        return 0

    # ------------------------------------------------------------ one step
    def forward(self, ids, names, cache=None):
        kwargs = dict(input_ids=ids, use_cache=self.decoder)
        if cache is not None:
            kwargs["past_key_values"] = cache
        if self.method == "floor":
            return self.model(**kwargs)
        if self.method == "ours_mixed":
            return self.serve(**kwargs, adapter_names=names)
        if self.method == "lora_peft":
            return self.model(**kwargs, adapter_names=names)
        raise AssertionError(self.method)

    def groups(self, names):
        """(adapter index, rows) per distinct adapter, for the looping methods."""
        by = {}
        for row, name in enumerate(names):
            by.setdefault(int(name[1:]), []).append(row)
        return [(i, torch.tensor(rows, device=self.device)) for i, rows in by.items()]

    def load(self, i):
        with torch.no_grad():
            for name, layer in self.layers.items():
                layer.coefficients.copy_(self.sets[i][name])

    def looped(self, ids_of, caches, names):
        """Our single-adapter path per distinct adapter: load its coefficients (and merge them in for `merge`), run
        its rows (with that group's KV cache in decode)."""
        outs = {}
        for i, rows in self.groups(names):
            self.load(i)
            if self.method == "merge":
                ff.merge(self.model)
            kwargs = dict(input_ids=ids_of(rows), use_cache=self.decoder)
            if caches is not None:
                kwargs["past_key_values"] = caches[i]
            outs[i] = self.model(**kwargs)
            if self.method == "merge":
                ff.unmerge(self.model)
        return outs

    def run(self, phase, k):
        names = [self.names[row % k] for row in range(ROWS)]
        looping = self.method in ("ours_loop", "merge")
        with torch.no_grad():
            if phase == "prefill":
                return (lambda: self.looped(lambda r: self.ids[r], None, names)) if looping else \
                    (lambda: self.forward(self.ids, names))
            # decode: a prefill builds the cache (untimed); each timed step adds one token per row
            if looping:
                caches = {i: out.past_key_values
                          for i, out in self.looped(lambda r: self.ids[r], None, names).items()}
                return lambda: self.looped(lambda r: self.next_ids[r], caches, names)
            cache = self.forward(self.ids, names).past_key_values
            return lambda: self.forward(self.next_ids, names, cache)

    def timed(self, phase, k, steps, warmup):
        sync = torch.cuda.synchronize if self.device == "cuda" else (lambda: None)
        with torch.no_grad():
            step = self.run(phase, k)
            for _ in range(warmup):
                step()
            times = []
            for _ in range(steps):
                sync()
                t0 = time.perf_counter()
                step()
                sync()
                times.append(time.perf_counter() - t0)
        self.times[f"{phase}/{k}"] = [1000 * t for t in times]


def worker(args) -> int:
    shape = json.loads(args.shape_json)
    contender = Contender(args.method, shape, args.device, args.resident, args.n, Path(args.adapter_dir))
    phases = ["prefill", "decode"] if contender.decoder else ["prefill"]
    ks = [1] if args.method == "floor" else [k for k in KS if k <= args.resident]
    if not args.steps:  # memory only
        phases = []
    for phase in phases:
        for k in ks:
            # looping at K=64 is 64 forwards (and 64 dW builds when merging) per step: one step is a long measurement
            few = args.method in ("ours_loop", "merge") and k == max(KS)
            contender.timed(phase, k, 1 if few else args.steps, 0 if few else args.warmup)
    print(json.dumps({"times_ms": contender.times, "load_s": contender.load_s,
                      "resident_bytes": contender.resident_bytes, "adapter_bytes": contender.adapter_bytes}))
    return 0


METHODS = ("floor", "ours_mixed", "lora_peft", "ours_loop", "merge")


def contenders(resident_counts, methods) -> list[tuple[str, int]]:
    runs = [("floor", 0)]
    for r in resident_counts:
        runs.append(("ours_mixed", r))
        if r <= LORA_MOST:
            runs.append(("lora_peft", r))
    # looping and merging hold the same coefficient sets; R only sizes a list: timed at R=100
    runs += [("ours_loop", 100), ("merge", 100)]
    return [(m, r) for m, r in runs if m in methods]


def bench_shape(shape_name, shape, args, adapter_dir) -> list[dict]:
    pooled, info = {}, {}
    for _ in range(args.rounds):
        for method, resident in contenders(args.resident, args.methods):
            cmd = [sys.executable, __file__, "--worker", "--method", method, "--resident", str(max(resident, 1)),
                   "--shape-json", json.dumps(shape), "--device", args.device, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--n", str(args.n), "--adapter-dir", str(adapter_dir)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"bench worker {method} R={resident} failed:\n{out.stderr[-3000:]}")
            report = json.loads(out.stdout.strip().splitlines()[-1])
            for key, times in report.pop("times_ms").items():
                pooled.setdefault((method, resident, key), []).extend(times)
            info[method, resident] = report
            print(f"{shape_name} {method} R={resident}: loaded in {report['load_s']:.1f} s", flush=True)
    rows = []
    for (method, resident, key), times in pooled.items():
        phase, k = key.split("/")
        rows.append({"shape": shape_name, "method": method, "resident": resident, "phase": phase, "k": int(k),
                     "ms": statistics.median(times), "ms_min": min(times), "steps": len(times),
                     "tokens_per_s": ROWS * (shape["seq"] if phase == "prefill" else 1) / (
                         statistics.median(times) / 1000),
                     **info[method, resident]})
    floor = {r["phase"]: r["ms"] for r in rows if r["method"] == "floor"}
    floor = {phase: floor.get(phase, float("nan")) for phase in ("prefill", "decode")}
    lora = {(r["phase"], r["k"], r["resident"]): r["ms"] for r in rows if r["method"] == "lora_peft"}
    for r in rows:
        r["x_floor"] = r["ms"] / floor[r["phase"]]
        same = lora.get((r["phase"], r["k"], r["resident"])) or lora.get((r["phase"], r["k"], LORA_MOST))
        r["x_lora"] = r["ms"] / same if same else None
    return rows


def markdown(rows) -> str:
    lines = ["| shape | phase | method | R resident | K in batch | ms (median) | min | tokens/s | x floor | x LoRA "
             "(same K) | adapter MiB | RSS growth MiB | load s |", "|" + "---|" * 13]
    order = {"floor": 0, "ours_mixed": 1, "lora_peft": 2, "ours_loop": 3, "merge": 4}
    for r in sorted(rows, key=lambda r: (r["shape"], r["phase"] != "prefill", r["k"], order[r["method"]],
                                         r["resident"])):
        x_lora = f"{r['x_lora']:.2f}" if r["x_lora"] is not None else "-"
        lines.append(f"| {r['shape']} | {r['phase']} | {r['method']} | {r['resident']:,} | {r['k']} | {r['ms']:.1f} | "
                     f"{r['ms_min']:.1f} | {r['tokens_per_s']:,.0f} | {r['x_floor']:.2f} | {x_lora} | "
                     f"{r['adapter_bytes'] / 2**20:.2f} | {r['resident_bytes'] / 2**20:.1f} | {r['load_s']:.1f} |")
    return "\n".join(lines)


def memory(args) -> int:
    """Resident adapter memory on the full-depth RoBERTa-base (12 layers, q and v: L = 24), loading only: our
    coefficient banks against PEFT LoRA r=8's adapters, R at a time, each in its own process."""
    shape = {**shapes("cuda")["roberta_base"], "seq": 1}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method, resident in contenders(args.resident, ["ours_mixed", "lora_peft"]):
            cmd = [sys.executable, __file__, "--worker", "--method", method, "--resident", str(resident),
                   "--shape-json", json.dumps(shape), "--device", "cpu", "--steps", "0", "--n", str(args.n),
                   "--adapter-dir", tmp]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"memory worker {method} R={resident} failed:\n{out.stderr[-3000:]}")
            report = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"method": method, "resident": resident, "adapter_bytes": report["adapter_bytes"],
                         "rss_growth_bytes": report["resident_bytes"], "load_s": report["load_s"],
                         "bytes_per_adapter": report["adapter_bytes"] / resident})
            print(rows[-1], flush=True)
    layers = 2 * shape["layers"]
    name = "serve-memory-" + device_name("cpu")
    report = {"shape": shape, "n": args.n, "layers_adapted": layers, "n_x_L_x_4": args.n * layers * 4,
              "git_commit": git_commit(), "torch": torch.__version__, "rows": rows}
    write_json_atomic(args.out / f"{name}.json", report)
    lines = ["| method | R resident | adapter bytes | per adapter | RSS growth MiB | load s |", "|" + "---|" * 6]
    lines += [f"| {r['method']} | {r['resident']:,} | {r['adapter_bytes']:,} | {r['bytes_per_adapter']:,.0f} | "
              f"{r['rss_growth_bytes'] / 2**20:.1f} | {r['load_s']:.1f} |" for r in rows]
    md = (f"# Resident adapters on the full-depth RoBERTa-base (12 layers, q and v: L = {layers})\n\nFourierFT "
          f"n={args.n}: n x L x 4 = {args.n * layers * 4:,} bytes per adapter; PEFT LoRA r=8 (stopped at "
          f"R={LORA_MOST}, see serve-*.md). Loading only, each row its own process; RSS growth is the process's "
          "resident memory after loading minus before (the base model excluded).\n\n" + "\n".join(lines) + "\n")
    write_atomic(args.out / f"{name}.md", md)
    print(md)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", nargs="+", default=["roberta_base", "llama7b"])
    parser.add_argument("--resident", nargs="+", type=int, default=[1, 100, 10000])
    parser.add_argument("--rounds", type=int, default=2, help="processes per contender, interleaved")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per (phase, K) per process (default 3 on GPU, 2 on CPU)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--tiny", action="store_true", help="smoke test: tiny shapes")
    parser.add_argument("--memory", action="store_true",
                        help="only the resident-memory table on the full-depth RoBERTa-base (no timing)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--shape-json", help=argparse.SUPPRESS)
    parser.add_argument("--adapter-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.resident = int(args.resident[0])
        return worker(args)
    if args.memory:
        return memory(args)
    args.steps = args.steps or (3 if args.device == "cuda" else 2)
    table = shapes(args.device)
    if args.tiny:
        table = {k: {**v, "hidden": 64, "heads": 4, "ffn": 128, "layers": 1, "seq": 4, "vocab": 100}
                 for k, v in table.items()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape_name in args.shapes:
            rows += bench_shape(shape_name, table[shape_name], args, Path(tmp) / shape_name)
    name = "serve-" + device_name(args.device) + ("-tiny" if args.tiny else "")
    used = {k: table[k] for k in args.shapes}
    hardware = torch.cuda.get_device_name() if args.device == "cuda" else cpu_features()
    report = {"device": name, "hardware": hardware, "torch": torch.__version__, "git_commit": git_commit(),
              "shapes": used, "rows_per_batch": ROWS, "n": args.n, "lora_r": 8, "processes": args.rounds,
              "steps": args.steps, "warmup": args.warmup, "threads": torch.get_num_threads(),
              "lora_most_resident": LORA_MOST, "rows": rows}
    write_json_atomic(args.out / f"{name}.json", report)
    md = (f"# Mixed-adapter serving on {name} (torch {torch.__version__})\n\n{ROWS} rows per batch, row i uses "
          f"adapter i % K of R resident; FourierFT n={args.n}, LoRA r=8, q and v adapted. Each (method, R) in its own "
          f"process, {args.rounds} processes each in interleaved rounds, {args.warmup} warm-up + {args.steps} timed "
          f"steps per (phase, K) (looping and merging at K=64: one step, no warm-up); median and min over all timed "
          f"steps. PEFT LoRA stops at R={LORA_MOST}: its "
          "add_adapter walks the whole model per call (41 ms per add at R=100, 149 ms at R=300 here).\n\n"
          f"Hardware: {json.dumps(hardware)}\n\nShapes: {json.dumps(used)}\n\n" + markdown(rows) + "\n")
    write_atomic(args.out / f"{name}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
