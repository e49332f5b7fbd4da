"""The suite: Hydra configs (conf/) run through one runner (runner.py) by task families (glue/, e2e/, instruct/,
vision/) that share experiments/shared/."""
from pathlib import PurePath

from omegaconf import OmegaConf

# ${basename:/models/mpnet-base/} -> mpnet-base: a local model folder names its results (conf/model/local.yaml)
if not OmegaConf.has_resolver("basename"):
    OmegaConf.register_new_resolver("basename", lambda path: PurePath(str(path).rstrip("/")).name)
