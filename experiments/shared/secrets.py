"""Keeping keys out of every file and console line a run writes. A results file redacts them (`redact`). Hydra saves
the command line and the composed config as given (.hydra/overrides.yaml, config.yaml, hydra.yaml, multirun.yaml)
and logs each job's overrides, so a key typed on the command line is moved into this process's environment before
Hydra sees it, and Hydra records only the interpolation that reads it back; a key written into a config file is
refused before Hydra writes anything."""
from __future__ import annotations

import os
import re

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# a whole key or its last "_" part: api_key, hf_token, access_token, secret, password (not "tokenizer")
SECRET = re.compile(r"(.*_)?(api_?key|token|secret|password|credentials?)", re.IGNORECASE)
REDACTED = "<redacted>"
ENV_PREFIX = "FOURIERFT_SECRET_"


def is_secret(key: str) -> bool:
    return bool(SECRET.fullmatch(str(key).rpartition(".")[2]))


def redact(config):
    """The config with every value under a secret-looking key (api_key, token, ...) replaced: a results file, a
    table or a shared folder must never carry a key."""
    if isinstance(config, dict):
        return {k: REDACTED if is_secret(k) and v not in (None, "") else redact(v)
                for k, v in config.items()}
    if isinstance(config, list):
        return [redact(v) for v in config]
    return config


def hide_command_line_secrets(argv: list[str], environ=os.environ) -> list[str]:
    """argv with each `key=value` whose key looks secret (judge.api_key=sk-...) replaced by
    `key=${oc.env:FOURIERFT_SECRET_<KEY>}`, the value put into `environ` (inherited by a sweep's local workers and
    exported to Slurm jobs by submitit). Interpolations, null and empty values are left as they are."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        name = key.lstrip("+~")
        if not sep or not is_secret(name) or value in ("", "null", "''", '""') or value.startswith("${"):
            out.append(arg)
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]  # Hydra's quoting, not part of the key
        variable = ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
        environ[variable] = value
        out.append(f"{key}=${{oc.env:{variable}}}")
    return out


def literal_secrets(cfg: DictConfig) -> list[str]:
    """Keys of the composed config (Hydra's own node aside) that hold a key written out, not read from the
    environment through an interpolation."""
    found = []

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                name = f"{prefix}.{k}" if prefix else str(k)
                if is_secret(str(k)) and isinstance(v, str) and v and not v.startswith("${"):
                    found.append(name)
                else:
                    walk(v, name)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{prefix}[{i}]")

    walk({k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}, "")
    return found


class RefuseWrittenSecrets(Callback):
    """Hydra callback (conf/train.yaml, hydra.callbacks): before Hydra creates a run folder or saves any config, a key
    written into a config file stops the run, naming the setting and the environment variable to use instead."""

    def _check(self, config: DictConfig) -> None:
        found = literal_secrets(config)
        if found:
            # SystemExit: Hydra turns a callback's Exception into a warning and carries on
            raise SystemExit(f"{', '.join(found)} holds a key written into a config file, which Hydra would copy into "
                             "the run's .hydra/config.yaml: read it from the environment instead, e.g. "
                             f"{found[0]}: ${{oc.env:OPENAI_API_KEY,null}} (as conf/judge/openai.yaml does), or give "
                             "it on the command line (kept out of the run's files)")

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config)
