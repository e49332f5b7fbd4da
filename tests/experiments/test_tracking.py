"""Weights & Biases: the composed run config (secrets redacted) is in the run's config, so runs group by method, n,
scaling and task; checked offline by reading the files of the run wandb writes."""
import json
import os
import subprocess
import sys

import pytest

from helpers import FAST, GLUE, ROOT

pytest.importorskip("wandb")


def config_item(run_file, key: str):
    """The value of config key `key` in an offline run's record file (run-*.wandb): wandb 0.31 writes config.yaml
    only when it syncs, and has no Python reader of its records. A ConfigItem record holds the key (field 1) and its
    value as JSON (field 16, tag bytes 0x82 0x01, then a varint length); the newest one wins."""
    data = run_file.read_bytes()
    marker = b"\n" + bytes([len(key)]) + key.encode() + b"\x82\x01"
    at = data.rindex(marker) + len(marker)
    length = shift = 0
    while True:
        byte = data[at]
        at, length, shift = at + 1, length | (byte & 0x7F) << shift, shift + 7
        if byte < 0x80:
            return json.loads(data[at:at + length])


@pytest.mark.slow
def test_the_run_config_reaches_the_wandb_run_with_secrets_redacted(tmp_path):
    secret = "sk-tracking-" + os.urandom(6).hex()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path),
           "OPENAI_API_KEY": secret, "WANDB_SILENT": "true"}
    args = [a for a in FAST if not a.startswith("logger=")]
    proc = subprocess.run([sys.executable, "-m", "experiments.train", *args, "logger=wandb", "model=tiny_bert",
                           "task=rte", f"data.glue_dir={GLUE}", "method.n=16", "method.scaling=77.0", "judge=openai",
                           "trainer.save_strategy=no", f"results_dir={tmp_path / 'results'}",
                           f"checkpoint_dir={tmp_path / 'ckpt'}", f"hydra.run.dir={tmp_path / 'outputs'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_file] = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    run = config_item(run_file, "fourierft")
    assert (run["method"]["name"], run["method"]["n"], run["method"]["scaling"]) == ("fourierft", 16, 77.0)
    assert run["task"]["name"] == "rte" and run["model"]["name"] == "tiny_bert" and len(run["config_id"]) == 8
    assert run["judge"]["api_key"] == "<redacted>"
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaks
