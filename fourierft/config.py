"""FourierFTConfig: everything that defines an adapter, serialisable to JSON."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Optional, Union

PATHS = ("auto", "dense", "merged", "spectral")
INITS = ("normal", "zeros")
BIASES = ("none", "all")


@dataclass
class FourierFTConfig:
    """Hyperparameters of a FourierFT adapter.

    n: spectral coefficients per adapted layer. scaling: alpha in dW = alpha * Re(ifft2(S)).
    entry_seed: seed of the entry draw (paper: 2024). target_modules: module-name suffixes, a regex
    matched against the full name, or None to detect the model family's query/value projections.
    fc / bandwidth: frequency bias of Eq. 5 (None = uniform, PEFT-compatible draw).
    init: "normal" (paper, c ~ N(0, 1)) or "zeros". modules_to_save: modules trained in full.
    bias: "none" or "all" (every bias of the model trains). n_pattern: per-module n, keyed like
    target_modules suffixes. path: training path ("auto", "dense" reference, "merged", "spectral").
    """

    n: int = 1000
    scaling: float = 150.0
    entry_seed: int = 2024
    target_modules: Optional[Union[list[str], str]] = None
    fc: Optional[float] = None
    bandwidth: float = 200.0
    init: str = "normal"
    modules_to_save: Optional[list[str]] = None
    bias: str = "none"
    n_pattern: dict[str, int] = field(default_factory=dict)
    path: str = "auto"

    def __post_init__(self):
        if isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)
        if isinstance(self.modules_to_save, tuple):
            self.modules_to_save = list(self.modules_to_save)
        self.n_pattern = dict(self.n_pattern or {})
        for key, value in [("n", self.n), *(("n_pattern[%r]" % k, v) for k, v in self.n_pattern.items())]:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"FourierFTConfig.{key} must be a positive integer, got {value!r}")
        if not isinstance(self.scaling, (int, float)) or not math.isfinite(self.scaling):
            raise ValueError(f"FourierFTConfig.scaling must be a finite number, got {self.scaling!r}")
        if self.fc is not None and (not isinstance(self.fc, (int, float)) or not math.isfinite(self.fc) or self.fc < 0):
            raise ValueError(f"FourierFTConfig.fc must be None (no frequency bias) or a finite number >= 0, got {self.fc!r}")
        if not isinstance(self.bandwidth, (int, float)) or not (self.bandwidth > 0 and math.isfinite(self.bandwidth)):
            raise ValueError(f"FourierFTConfig.bandwidth must be a finite number > 0, got {self.bandwidth!r}")
        for name, value, allowed in (("init", self.init, INITS), ("bias", self.bias, BIASES), ("path", self.path, PATHS)):
            if value not in allowed:
                raise ValueError(f"FourierFTConfig.{name}={value!r} is not one of {allowed}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "FourierFTConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown FourierFTConfig fields {sorted(unknown)}; accepted: {sorted(known)}")
        return cls(**data)
