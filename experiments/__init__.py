"""The suite: Hydra configs (conf/) run through one runner (runner.py) by task families (glue/, e2e/, instruct/,
vision/) that share experiments/shared/."""
import re
from pathlib import Path, PurePath

from omegaconf import OmegaConf

# ${basename:/models/mpnet-base/} -> mpnet-base: a local model folder names its results (conf/model/local.yaml)
if not OmegaConf.has_resolver("basename"):
    OmegaConf.register_new_resolver("basename", lambda path: PurePath(str(path).rstrip("/")).name)

# ${repo_root:}: the repository this suite runs from (conf/paths/default.yaml builds every path on it), so a run
# started from another folder still finds data/ and conf/
if not OmegaConf.has_resolver("repo_root"):
    OmegaConf.register_new_resolver("repo_root", lambda: str(Path(__file__).resolve().parents[1]))

# ${folder_name:...}: one folder name made of a config value (Hydra's run folder holds task.name): every character
# that could add a folder level, or that a shell would need quoted, becomes "_"
if not OmegaConf.has_resolver("folder_name"):
    OmegaConf.register_new_resolver("folder_name", lambda value: re.sub(r"[^A-Za-z0-9_.=+-]", "_", str(value)))

# experiment=<table>/<row> and its per-method presets, from the hyperparameter tables in conf/tables/
from .presets import register as _register_presets  # noqa: E402

_register_presets()
