"""FourierFTConfig: everything that defines an adapter, serialisable to JSON."""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Optional, Union

PATHS = ("auto", "dense", "merged", "spectral")
INITS = ("normal", "zeros")
BIASES = ("none", "all")
BASES = ("fourier", "random", "orthogonal")  # the basis ablation (fourierft.bases)


@dataclass
class FourierFTConfig:
    """Hyperparameters of a FourierFT adapter: dW = scaling * Re(IDFT2(S)) per targeted layer, S zero except at n
    entries shared by all layers of one shape. Every field's meaning is in its `metadata["help"]`
    (`FourierFTConfig.help()` prints them all)."""

    n: int = field(default=1000, metadata={"help": (
        "Spectral coefficients trained per adapted layer (the paper's n; 1000 for RoBERTa/GPT-2/LLaMA q,v, "
        "3000-10000 for ViT). Must fit the layer: 1 <= n <= d_out * d_in.")})
    scaling: float = field(default=150.0, metadata={"help": (
        "alpha in dW = alpha * Re(ifft2(S)). torch's ifft2 divides by d_out * d_in, so with c ~ N(0, 1) at init dW's "
        "entries have size about alpha * sqrt(n / 2) / (d_out * d_in): the same alpha is far stronger on a small "
        "matrix (384x384) than on a large one (4096x4096, 113x weaker). The paper tunes it per task (29-151 on "
        "RoBERTa-base, 300 on GPT-2 and ViT); scale it with d_out * d_in when moving to another model size.")})
    entry_seed: int = field(default=2024, metadata={"help": (
        "Seed of the entry draw (paper: 2024). Uniform draws follow PEFT's rule, so adapters move between the two.")})
    target_modules: Optional[Union[list[str], str]] = field(default=None, metadata={"help": (
        "Modules to adapt: a list of module-name suffixes (\"value\" selects \"...attention.self.value\"), a "
        "regular expression over the full name, or None to detect the family's query/value projections, the first "
        "of these that the model has: query/value (BERT, RoBERTa, ELECTRA, transformers-4 ViT), q_proj/v_proj "
        "(LLaMA, Mistral, Qwen, Gemma, OPT, BART, transformers-5 ViT), query_proj/value_proj (DeBERTa-v2), c_attn "
        "(GPT-2, fused), qkv (timm ViT, fused), query_key_value (BLOOM, GPT-NeoX, Falcon), Wqkv (MPT), qkv_proj "
        "(CodeGen), q/v (T5, MPNet), in_proj (DeBERTa).")})
    fc: Optional[float] = field(default=None, metadata={"help": (
        "Favoured central frequency of the frequency bias (Eq. 5), in bins from DC of the centred spectrum; None "
        "draws entries uniformly (PEFT-compatible).")})
    bandwidth: float = field(default=200.0, metadata={"help": "W of Eq. 5 (paper: 200); used only when fc is set."})
    init: str = field(default="normal", metadata={"help": (
        "Coefficient init: \"normal\" (c ~ N(0, 1), as the paper and its code: dW is not zero at start) or \"zeros\" "
        "(dW starts at zero).")})
    modules_to_save: Optional[list[str]] = field(default=None, metadata={"help": (
        "Modules trained in full beside the adapter (a task head such as \"classifier\"), as name suffixes.")})
    bias: str = field(default="none", metadata={"help": "\"none\", or \"all\": every bias of the model trains too."})
    n_pattern: dict[str, int] = field(default_factory=dict, metadata={"help": (
        "Per-module n: {key: n}, keys matched as regex suffixes of module names (PEFT's n_frequency_pattern).")})
    fused: dict[str, list[str]] = field(default_factory=dict, metadata={"help": (
        "Fused projections whose output rows stack several projections, keyed by module-name suffix, listing the "
        "parts in output order (equal sizes): {\"c_attn\": [\"q\", \"k\", \"v\"]} for GPT-2, {\"qkv\": [\"q\", \"k\", "
        "\"v\"]} for timm ViT. Each part named in fused_targets gets its own d_part x d_in spectrum (n entries, "
        "PEFT's rule for that shape), so n and alpha mean what they mean for separate projections; the other "
        "parts get no dW. Empty: a fused module is one matrix.")})
    fused_targets: list[str] = field(default_factory=lambda: ["q", "v"], metadata={"help": (
        "Which parts of a fused projection are adapted (the paper adapts q and v).")})
    basis: str = field(default="fourier", metadata={"help": (
        "The paper's basis ablation (Table 6): \"fourier\" (FourierFT), or the same entries and coefficients on "
        "seeded \"random\" Gaussian or random \"orthogonal\" bases instead of the inverse DFT (scaled to its column "
        "norm). Non-Fourier bases are for the ablation: slower, and PEFT cannot load them.")})
    basis_seed: int = field(default=0, metadata={"help": "Seed of the random bases (basis != \"fourier\")."})
    path: str = field(default="auto", metadata={"help": (
        "How a layer computes during training: \"merged\" (one GEMM with W + dW, no weight gradient), "
        "\"spectral\" (dW applied in the frequency domain, never built), \"dense\" (the reference formula, as "
        "PEFT), or \"auto\" (spectral for few tokens, else merged, by a flop count). All are exact.")})

    @classmethod
    def help(cls) -> str:
        """Every field with its default and meaning, one line each."""
        defaults = cls()
        return "\n".join(f"{f.name} (default {getattr(defaults, f.name)!r}): {f.metadata['help']}"
                         for f in fields(cls))

    def __post_init__(self):
        if isinstance(self.target_modules, (tuple, list)):
            self.target_modules = _names("target_modules", self.target_modules)
        elif isinstance(self.target_modules, str):
            try:
                re.compile(self.target_modules)
            except re.error as e:
                raise ValueError(f"FourierFTConfig.target_modules={self.target_modules!r} is a string, so a regular "
                                 f"expression over module names, but it does not compile ({e}); give a list of "
                                 "name suffixes instead, e.g. ['query', 'value']") from e
        elif self.target_modules is not None:
            raise ValueError("FourierFTConfig.target_modules must be a list of module-name suffixes, a regex string "
                             f"or None, got {self.target_modules!r}")
        if isinstance(self.modules_to_save, str):  # one module name, not its characters
            self.modules_to_save = [self.modules_to_save]
        if self.modules_to_save is not None:
            self.modules_to_save = _names("modules_to_save", self.modules_to_save)
        self.n_pattern = dict(self.n_pattern or {})
        for key, value in [("n", self.n), *((f"n_pattern[{k!r}]", v) for k, v in self.n_pattern.items())]:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"FourierFTConfig.{key} must be a positive integer, got {value!r}")
        if isinstance(self.entry_seed, bool) or not isinstance(self.entry_seed, int):
            raise ValueError(f"FourierFTConfig.entry_seed must be an integer, got {self.entry_seed!r}")
        if isinstance(self.scaling, bool) or not isinstance(self.scaling, (int, float)) \
                or not math.isfinite(self.scaling) or self.scaling == 0:
            raise ValueError(f"FourierFTConfig.scaling must be a finite non-zero number, got {self.scaling!r} (at 0, "
                             "dW is zero whatever the coefficients, and they get no gradient)")
        if self.fc is not None and not (isinstance(self.fc, (int, float)) and math.isfinite(self.fc) and self.fc >= 0):
            raise ValueError("FourierFTConfig.fc must be None (no frequency bias) or a finite number >= 0, "
                             f"got {self.fc!r}")
        if not isinstance(self.bandwidth, (int, float)) or not (self.bandwidth > 0 and math.isfinite(self.bandwidth)):
            raise ValueError(f"FourierFTConfig.bandwidth must be a finite number > 0, got {self.bandwidth!r}")
        self.fused = {k: list(v) for k, v in (self.fused or {}).items()}
        self.fused_targets = list(self.fused_targets)
        for key, parts in self.fused.items():
            if not parts or not all(isinstance(p, str) for p in parts) or len(set(parts)) != len(parts):
                raise ValueError(f"FourierFTConfig.fused[{key!r}] must list distinct part names, got {parts!r}")
            unknown = [t for t in self.fused_targets if t not in parts]
            if unknown or not self.fused_targets:
                raise ValueError(f"FourierFTConfig.fused_targets={self.fused_targets!r}: {unknown or 'nothing'} is "
                                 f"not a part of fused[{key!r}]={parts!r}; name parts of it")
        if isinstance(self.basis_seed, bool) or not isinstance(self.basis_seed, int):
            raise ValueError(f"FourierFTConfig.basis_seed must be an integer, got {self.basis_seed!r}")
        choices = (("init", self.init, INITS), ("bias", self.bias, BIASES), ("path", self.path, PATHS),
                   ("basis", self.basis, BASES))
        for name, value, allowed in choices:
            if value not in allowed:
                raise ValueError(f"FourierFTConfig.{name}={value!r} is not one of {allowed}")

    def to_dict(self) -> dict:
        """The JSON-ready fields (what fourierft_adapter.json stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FourierFTConfig:
        """The config stored by to_dict; unknown or wrongly typed fields are an error that names them."""
        if not isinstance(data, dict):
            raise ValueError(f"a FourierFTConfig is a JSON object of fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown FourierFTConfig fields {sorted(unknown)}; accepted: {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as e:  # a wrongly typed field that the checks above did not name
            raise ValueError(f"FourierFTConfig fields {data} do not form a valid config: {e}") from e


def _names(field_name: str, values) -> list[str]:
    values = list(values)
    if not all(isinstance(v, str) and v for v in values):
        raise ValueError(f"FourierFTConfig.{field_name} must hold module names (non-empty strings), got {values!r}")
    return values
