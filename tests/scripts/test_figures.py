"""scripts/figures.py: each figure from its own sweeps' folder, per point the configuration best on dev; the sampling
figure follows the sampler."""
import json
import subprocess
import sys

from helpers import ROOT, glue_result


def test_figures_from_fixture_results(tmp_path):
    sweeps = tmp_path / "sweeps"
    for folder in ("fig4", "fc", "lr", "fig1_vit"):
        (sweeps / folder).mkdir(parents=True)
    for seed, (a, b, c) in enumerate([(60.0, 70.0, 65.0), (62.0, 72.0, 67.0)]):
        fake_run(sweeps / "fig4", "fourierft", seed, a, n=100)
        fake_run(sweeps / "fig4", "fourierft", seed, b, n=1000)
        fake_run(sweeps / "fig4", "fourierft", seed, b - 20, n=1000, lr=0.5)  # a worse LR at the same point
        fake_run(sweeps / "fig4", "lora", seed, c, r=8)
        fake_run(sweeps / "fc", "fourierft", seed, b + 1, n=1000)            # the f_c sweep's own uniform run
        fake_run(sweeps / "fc", "fourierft", seed, b - 5, n=1000, fc=100)
        fake_run(sweeps / "lr", "fourierft", seed, 99.0, n=1000, lr=0.2)     # an LR-search trial: in no figure
    for r, n, score in ((8, None, 70.0), (16, None, 72.0), (None, 3000, 74.0)):
        vision_run(sweeps / "fig1_vit", score, r=r, n=n)
    out = tmp_path / "figures"
    proc = subprocess.run([sys.executable, "-m", "scripts.figures", "--results", str(sweeps), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    notes = (out / "figures.md").read_text()
    # mean and sd over the two seeds; at n=1000 the better of the two learning rates (2 tried); x is ln(parameters
    # per adapted layer): n for FourierFT (12 layers: 12,000 parameters at n=1000), LoRA's 800 over those 12 layers
    assert "| STS-B | fourierft | n=1000 | 1000 | 6.91 | 2 | 2 | 71.0 ± 1.41 |" in notes
    assert "| STS-B | lora | r=8 | 66 | 4.20 | 1 | 2 | 66.0 ± 1.41 |" in notes
    assert "| STS-B | 1000 | uniform | 2 | 72.0 |" in notes and "| STS-B | 1000 | 100 | 2 | 66.0 |" in notes
    assert "99.0" not in notes
    assert "| fig1_vit | vit_base | DTD | lora | r=16 |" in notes and "| 74.00 |" in notes
    for png in ("fig1_params_vs_score.png", "fig3_sampling.png", "fig4_n_scaling.png", "fig5_fc.png"):
        assert (out / png).stat().st_size > 5000, png


def test_sampling_figure_follows_the_sampler(tmp_path):
    from scripts import figures

    medians = figures.fig3_sampling(tmp_path, fcs=(0, 100, 150), size=384, bandwidth=50.0)
    assert (tmp_path / "fig3_sampling.png").is_file()
    assert medians[0] < medians[100] < medians[150]  # the probability mass moves out with f_c
    assert abs(medians[100] - 100) < 15


def fake_run(folder, method, seed, score, **settings):
    name = {"fourierft": "n", "lora": "r"}[method]
    variant = f"{name}={settings[name]}" + (f", fc={settings['fc']}" if settings.get("fc") is not None else "")
    config_id = f"{method}{settings}".replace(" ", "")
    run = glue_result("stsb", "pearson", score, method=method, variant=variant, seed=seed, config_id=config_id,
                      trainable_params=settings.get("n", 0) * 12 + settings.get("r", 0) * 100,
                      config={"method": {"name": method, "basis": "fourier", "fc": None, **settings}})
    (folder / f"{method}-{abs(hash(config_id))}-seed{seed}.json").write_text(json.dumps(run))


def vision_run(folder, test_accuracy, r=None, n=None):
    from experiments.shared.tasks import load_task
    from experiments.vision.family import Vision

    method, variant = ("lora", f"r={r}") if r else ("fourierft", f"n={n}")
    run = glue_result("dtd", "test_accuracy", test_accuracy, family="vision", model="vit_base", method=method,
                      variant=variant, config_id=variant, trainable_params=(r or 0) * 1000 + (n or 0) * 24 + 500,
                      head_params=500, report=Vision.report.as_dict(load_task("dtd").display_name),
                      selection={"metric": "validation_accuracy", "split": "validation", "mode": "max",
                                 "value": test_accuracy - 1})
    (folder / f"{method}-{variant}-seed0.json").write_text(json.dumps(run))


def test_basis_table_puts_the_papers_table_6_beside_ours():
    import pandas as pd

    from scripts import figures

    rows = pd.DataFrame([{"model": model, "task": "rte", "n": 1000, "method": "fourierft", "fc": None, "basis": b,
                          "score": 70.0, "seeds": 1} for model in ("roberta_base", "tiny") for b in ("fourier", "random")])
    table = figures.basis_table(rows)
    assert "| roberta_base | RTE | 1000 | 70.0 (1 seeds) | 70.0 (1 seeds) | - | 79.1 / 72.7 / 75.6 |" in table
    assert "| tiny | RTE | 1000 | 70.0 (1 seeds) | 70.0 (1 seeds) | - | - |" in table


def test_figure_6_curves_are_per_epoch_means_over_seeds(tmp_path):
    """Dev accuracy and F1 of each epoch, and the mean of the training losses logged within it, averaged over
    seeds; one line per configuration."""
    folder = tmp_path / "sweeps" / "fig6"
    folder.mkdir(parents=True)
    for seed, shift in ((0, 0.0), (1, 2.0)):
        for method, variant, base in (("lora", "r=1", 80.0), ("fourierft", "n=1536", 84.0)):
            epochs = [{"epoch": e, "accuracy": base + e + shift, "f1": base + 5 + e + shift} for e in (1.0, 2.0)]
            losses = [{"epoch": 0.5, "loss": 0.7 + shift}, {"epoch": 1.0, "loss": 0.5 + shift},
                      {"epoch": 1.5, "loss": 0.3}, {"epoch": 2.0, "loss": 0.1}]
            run = glue_result("mrpc", "accuracy", base, method=method, variant=variant, seed=seed, epochs=epochs,
                              train_loss=losses, config_id=variant)
            (folder / f"{method}-{variant}-seed{seed}.json").write_text(json.dumps(run))
    out = tmp_path / "figures"
    subprocess.run([sys.executable, "-m", "scripts.figures", "--results", str(tmp_path / "sweeps"), "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True)
    notes = (out / "figures.md").read_text()
    # epoch 1: losses (0.7, 0.5) and (2.7, 2.5) -> 0.6 and 2.6 -> 1.6; epoch 2: (0.3, 0.1) both -> 0.2
    assert "| lora | r=1 | 1 | 2 | 82.0 | 87.0 | 1.6000 |" in notes
    assert "| fourierft | n=1536 | 2 | 2 | 87.0 | 92.0 | 0.2000 |" in notes
    assert (out / "fig6_training.png").stat().st_size > 5000


def test_figure_4_says_why_lora_points_without_a_fourierft_run_are_not_drawn(tmp_path):
    sweeps = tmp_path / "sweeps"
    (sweeps / "fig4").mkdir(parents=True)
    fake_run(sweeps / "fig4", "lora", 0, 65.0, r=8)
    subprocess.run([sys.executable, "-m", "scripts.figures", "--results", str(sweeps), "--out", str(tmp_path / "f")],
                   cwd=ROOT, check=True, capture_output=True)
    assert "LoRA points of m are not drawn" in (tmp_path / "f" / "figures.md").read_text()
