"""Figure 7 (Appendix C.2) at the paper's own scale: 8 Gaussian clusters in 2D, a network whose single 64 x 64 hidden
layer is adapted with LoRA (r = 1) or FourierFT (n = 128), the same 128 trainable numbers each, trained for 2000
epochs; accuracy per epoch, several seeds.

The paper gives the task and the sizes, not the rest; here: 8 centres on a circle of radius 4, 100 points per class
with Gaussian noise of sd 0.5 (separable: neighbouring centres lie 6 sd apart, as in the paper's picture); a frozen,
seeded random network 2 -> 64 -> 64 -> 8 (ReLU) whose hidden layer alone is adapted (its input and output layers
stay as drawn, as a pretrained model's would); full-batch Adam; each method and seed at the best of a learning-rate
grid (by its final training accuracy, which is what the figure plots; ties to the earliest 100%), the grid widened in
half-decade steps until the best LR lies strictly inside it, so that neither method is held back by its grid; LoRA
from PEFT (alpha = r, PEFT's default
init: B = 0), FourierFT from this library (the paper's N(0, 1) init).

python -m scripts.fig7_expressive [--out results/fig7] [--seeds 0 1 2 3 4] [--epochs 2000]
Writes data.csv (the points of seed 0), curves.csv (accuracy per epoch, method, seed, LR), summary.md and
fig7_expressive.png.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torch import nn

import fourierft as ff
from fourierft.files import write_atomic

ROOT = Path(__file__).resolve().parents[1]

CLASSES, PER_CLASS, RADIUS, NOISE, HIDDEN = 8, 100, 4.0, 0.5, 64
LRS = {"lora": (3e-3, 1e-2, 3e-2, 1e-1), "fourierft": (3e-2, 1e-1, 3e-1, 1.0)}  # where each search starts
WIDEN = 6  # at most this many half-decade steps beyond the starting grid on either side
FOURIER_SCALING = 64.0  # ifft2 divides by 64 * 64: alpha 64 gives dW entries of order sqrt(n/2)/64, ~ W's


def clusters(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    angles = torch.arange(CLASSES) * 2 * math.pi / CLASSES
    centres = RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    labels = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    points = centres[labels] + NOISE * torch.randn(len(labels), 2, generator=g)
    return points, labels


class Net(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.inp, self.hidden, self.out = nn.Linear(2, HIDDEN), nn.Linear(HIDDEN, HIDDEN), nn.Linear(HIDDEN, CLASSES)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(torch.relu(self.inp(x)))))


def adapted(method: str, seed: int) -> nn.Module:
    """The seeded random network with its hidden layer adapted; only the adapter's 128 numbers train."""
    model = Net(seed)
    if method == "fourierft":
        model = ff.apply_fourierft(model, ff.FourierFTConfig(n=128, scaling=FOURIER_SCALING,
                                                             target_modules=["hidden"], entry_seed=seed))
    else:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=1, lora_alpha=1, target_modules=["hidden"]))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 128, (method, trainable)
    return model


def train(method: str, seed: int, lr: float, epochs: int, points, labels) -> list[float]:
    model = adapted(method, seed)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    accuracies = []
    for _ in range(epochs):
        optimizer.zero_grad()
        logits = model(points)
        nn.functional.cross_entropy(logits, labels).backward()
        optimizer.step()
        accuracies.append(float((logits.argmax(1) == labels).float().mean()))
    return accuracies


def first_perfect(curve: list[float]):
    return next((i + 1 for i, a in enumerate(curve) if a == 1.0), None)


def half_decade(lr: float, up: bool) -> float:
    """The next LR of the 1, 3, 10, 30, ... ladder above (or below) `lr`."""
    exponent = math.floor(math.log10(lr) + 1e-9)
    mantissa = round(lr / 10 ** exponent)
    if up:
        return 3 * 10 ** exponent if mantissa == 1 else 10 ** (exponent + 1)
    return 10 ** exponent if mantissa == 3 else 3 * 10 ** (exponent - 1)


def bracketed_search(run, grid) -> tuple[float, dict, bool]:
    """(best LR, {LR: curve} for every LR tried, whether the best lies strictly inside the grid tried). `run(lr)`
    trains one curve; the grid grows by a half-decade at the edge the best sits on, up to WIDEN steps a side."""
    curves = {lr: run(lr) for lr in grid}

    def best():
        return max(curves, key=lambda k: (curves[k][-1], -(first_perfect(curves[k]) or math.inf)))

    steps = {True: 0, False: 0}
    while True:
        lr, tried = best(), sorted(curves)
        inside = tried[0] < lr < tried[-1]
        up = lr == tried[-1]
        if inside or steps[up] >= WIDEN:
            return lr, curves, inside
        steps[up] += 1
        new = half_decade(lr, up)
        curves[new] = run(new)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "fig7")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=2000)
    args = parser.parse_args(argv)
    if args.epochs < 1 or not args.seeds:
        parser.error(f"--epochs {args.epochs} --seeds {args.seeds}: at least one epoch and one seed")
    torch.set_num_threads(1)  # tiny matrices: threads only add noise to the timing and the order of sums
    rows, best, grids = [], {}, {}
    for seed in args.seeds:
        points, labels = clusters(seed)
        if seed == args.seeds[0]:
            write_atomic(args.out / "data.csv", "x,y,label\n" + "".join(
                f"{x:.6f},{y:.6f},{int(c)}\n" for (x, y), c in zip(points.tolist(), labels)))
        for method in ("lora", "fourierft"):
            lr, curves, inside = bracketed_search(
                lambda rate, m=method: train(m, seed, rate, args.epochs, points, labels), LRS[method])
            best[(method, seed)] = (lr, curves[lr])
            grids[(method, seed)] = (sorted(curves), inside)
            rows += [f"{method},{seed},{lr:g},{epoch + 1},{acc:.6f}\n" for epoch, acc in enumerate(curves[lr])]
    write_atomic(args.out / "curves.csv", "method,seed,lr,epoch,accuracy\n" + "".join(rows))
    lines = ["| method | seed | LR (best of grid) | LRs tried | best inside them | final accuracy | best accuracy | "
             "first epoch at 100% |", "|---|---|---|---|---|---|---|---|"]
    for (method, seed), (lr, curve) in sorted(best.items()):
        reached = first_perfect(curve)
        tried, inside = grids[(method, seed)]
        lines.append(f"| {method} | {seed} | {lr:g} | {', '.join(f'{t:g}' for t in tried)} | "
                     f"{'yes' if inside else 'no: at the widest grid edge'} | {100 * curve[-1]:.2f} | "
                     f"{100 * max(curve):.2f} | {reached if reached else 'never'} |")
    summary = (f"Figure 7: {CLASSES} Gaussian clusters, {CLASSES * PER_CLASS} points, hidden layer {HIDDEN}x{HIDDEN}, "
               f"LoRA r=1 vs FourierFT n=128 (128 trainable numbers each), {args.epochs} full-batch epochs, "
               f"seeds {args.seeds}; LR searches start from {LRS} and widen in half-decade steps until the best LR "
               "lies inside the LRs tried.\n\n" + "\n".join(lines) + "\n")
    write_atomic(args.out / "summary.md", summary)
    plot(best, args.out / "fig7_expressive.png", points_labels=clusters(args.seeds[0]))
    print(summary)
    return 0


def plot(best: dict, path: Path, points_labels) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, labels = points_labels
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=6)
    left.set_xlabel("X")
    left.set_ylabel("Y")
    left.set_title("the data (seed 0)")
    for method, colour in (("lora", "tab:orange"), ("fourierft", "tab:blue")):
        for (m, seed), (_, curve) in sorted(best.items()):
            if m == method:
                right.plot(range(1, len(curve) + 1), curve, color=colour, alpha=0.6, lw=1,
                           label={"lora": "LoRA (r=1)", "fourierft": "FourierFT (n=128)"}[method] if seed == min(
                               s for mm, s in best if mm == method) else None)
    right.set_xlabel("Epoch")
    right.set_ylabel("Accuracy")
    right.set_title("training accuracy, one line per seed")
    right.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=130)
    tmp.replace(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
