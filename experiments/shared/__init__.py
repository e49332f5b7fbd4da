"""Machinery every recipe shares: sources, backbones, methods, the Trainer, run bookkeeping. No recipe here."""
from hydra.utils import instantiate


def build(cfg):
    """(method, backbone) objects from the run's method and model configs; a backbone that cannot be had (offline,
    no local copy) stops the run here, before any data loads."""
    method, backbone = instantiate(cfg.method, _convert_="all"), instantiate(cfg.model, _convert_="all")
    backbone.check()
    return method, backbone
