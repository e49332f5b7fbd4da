"""scripts/figures.py: the figures and their numbers from sweep results; the sampling figure follows the sampler."""
import json
import subprocess
import sys

from helpers import ROOT, glue_result


def test_figures_from_fixture_results(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for seed, (a, b, c) in enumerate([(60.0, 70.0, 65.0), (62.0, 72.0, 67.0)]):
        fake_run(results, "fourierft", seed, a, n=100)
        fake_run(results, "fourierft", seed, b, n=1000)
        fake_run(results, "lora", seed, c, r=8)
        fake_run(results, "fourierft", seed, b - 5, n=1000, fc=100)
    out = tmp_path / "figures"
    proc = subprocess.run([sys.executable, "scripts/figures.py", "--results", str(results), "--main",
                           str(results), "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    notes = (out / "figures.md").read_text()
    assert "| STS-B | fourierft | n=1000 | 0.012M | 2 | 71.0 ± 1.41 |" in notes  # mean and sd over the two seeds
    assert "| STS-B | lora | r=8 | 800 | 2 | 66.0 ± 1.41 |" in notes
    assert "| STS-B | 1000 | uniform | 2 | 71.0 |" in notes and "| STS-B | 1000 | 100 | 2 | 66.0 |" in notes
    for png in ("fig1_params_vs_score.png", "fig3_sampling.png", "fig4_n_scaling.png", "fig5_fc.png"):
        assert (out / png).stat().st_size > 5000, png


def test_sampling_figure_follows_the_sampler(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import figures

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
