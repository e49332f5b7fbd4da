"""FourierFTLayer: a frozen Linear / Conv1D plus n trainable spectral coefficients."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .plan import Plan
from .spectral import MergedLinear, SpectralDelta
from .wrapped import WrappedLayer, check_layer_entries, check_path, dequantized_weight


class FourierFTLayer(WrappedLayer):
    """A frozen Linear or Conv1D (`base_layer`) plus dW = scaling * Re(ifft2(S)), S holding `coefficients` at
    `entries`.

    Args:
        base_layer: the wrapped layer; its weight is read as (d_out, d_in).
        entries: (2, n) int tensor of spectrum positions (rows u, columns v).
        scaling: alpha. init: "normal" (c ~ N(0, 1)) or "zeros". path: "auto", "merged", "spectral" or "dense".
        blocks: for a fused projection, the (first row, rows) of each adapted part; entries then hold each part's
            n entries one after the other (relative to the part), and each part is its own rows x d_in spectrum.

    The coefficients stay float32 whatever the base dtype; forward output has the input's dtype (or autocast's).
    Over a quantized base (bitsandbytes 4/8-bit) the layer never touches the weight: its output is the base layer's
    plus dW x (dense or spectral path), and merge() is refused unless asked to dequantize.
    """

    def __init__(self, base_layer: nn.Module, entries: torch.Tensor, scaling: float, init: str = "normal",
                 path: str = "auto", blocks: Optional[list[tuple[int, int]]] = None, basis: str = "fourier",
                 basis_seed: int = 0):
        super().__init__(base_layer)
        self.scaling = float(scaling)
        self.path = path
        self.merged = False
        self._merged_with: Optional[torch.Tensor] = None  # the coefficients and alpha whose dW is inside the weight
        self._merged_scaling, self._merged_version = self.scaling, 0
        self.blocks = [tuple(b) for b in blocks] if blocks else None
        self.basis, self.basis_seed = basis, basis_seed
        check_path(path, base_layer)
        check_layer_entries(entries, self.d_out, self.d_in, self.blocks)
        device = base_layer.weight.device
        n = entries.shape[1]
        coef = torch.randn(n) if init == "normal" else torch.zeros(n)
        # coefficients stay float32 whatever the base dtype: they are few, and bf16 would lose them
        self.coefficients = nn.Parameter(coef.to(device))
        self.register_buffer("entries", entries.to(device=device, dtype=torch.long), persistent=False)
        self._plan = None

    def _apply(self, fn, recurse=True):
        # model.to(torch.bfloat16) casts every floating parameter: the coefficients go back to float32 (they are
        # few, and bf16 would lose them); device moves are kept
        coefficients = self.coefficients.data
        super()._apply(fn, recurse)
        if self.coefficients.dtype != torch.float32:  # the float32 values themselves, not their bf16 rounding
            self.coefficients.data = coefficients.to(self.coefficients.device)
        return self

    @property
    def n(self) -> int:
        return self.coefficients.numel()

    def plan(self) -> Plan:
        if self._plan is None or self._plan.device != self.entries.device:
            self._plan = self.plan_for(self.entries, self.blocks, self.basis, self.basis_seed)
        return self._plan

    def set_entries(self, entries: torch.Tensor) -> None:
        if entries.shape[-1] != self.n:
            raise ValueError(f"{entries.shape[-1]} entries for the layer's {self.n} coefficients")
        check_layer_entries(entries, self.d_out, self.d_in, self.blocks)
        self.entries = entries.to(device=self.entries.device, dtype=torch.long)
        self._plan = None

    def delta_weight(self) -> torch.Tensor:
        """alpha * Re(ifft2(S)) as (d_out, d_in) float32."""
        return self.plan().delta_weight(self.coefficients, self.scaling)

    def choose_path(self, x: torch.Tensor) -> str:
        if self.path != "auto":
            return self.path
        # few tokens (generation, short batches, wide layers): building dW costs more than transforming them
        path = self.plan().cheaper_path(x.numel() // self.d_in)
        return "dense" if path == "merged" and self.quantized else path  # dense: dW x beside the packed weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            if self.training and torch.is_grad_enabled() and self.coefficients.requires_grad:
                # merged, the coefficients are not in the graph: backward would fail with torch's "does not require
                # grad", or train only the other parameters without a word
                raise RuntimeError("this FourierFT layer is merged (dW is inside the frozen weight), so its "
                                   "coefficients get no gradient: call fourierft.unmerge(model) before training, or "
                                   "model.eval() / torch.no_grad() for inference")
            self._check_unedited()
            return self.base_layer(x)
        return self._adapted(x, self.coefficients, self.choose_path(x))

    def _check_unedited(self) -> None:
        """Merged, the weight holds the dW of the coefficients at merge time: an edit since then (an in-place change,
        a load_state_dict) would be ignored without a word. The version counter makes the usual case free."""
        if self.scaling == self._merged_scaling and (
                self.coefficients._version == self._merged_version
                or torch.equal(self.coefficients.detach(), self._merged_with.to(self.coefficients.device))):
            self._merged_version = self.coefficients._version  # rewritten with the same values: the next check is free
            return
        raise RuntimeError("the coefficients (or scaling) of this merged FourierFT layer changed after merge(), so "
                           "the merged weight no longer matches them: call fourierft.unmerge(model) (it removes "
                           "exactly the dW that was merged), then merge() again to use the new values")

    def _adapted(self, x: torch.Tensor, coef: torch.Tensor, path: str) -> torch.Tensor:
        """The layer's output with coefficients `coef` along `path`."""
        if path == "dense":
            return self.with_delta(x, self.plan().dense_delta_weight(coef, self.scaling))
        if path == "spectral":
            return self.base_layer(x) + SpectralDelta.apply(x, coef, self.plan(), self.scaling)
        return MergedLinear.apply(x, coef, self.weight_view(), self.base_layer.bias, self.plan(), self.scaling)

    @torch.no_grad()
    def merge(self, dequantize: bool = False) -> None:
        """Add dW into the frozen weight. In bf16/fp16 the sum is rounded, so a later unmerge restores W only to
        within that rounding (exact in float32). A quantized base is refused unless `dequantize`: then the base
        layer becomes a plain Linear holding dequantize(W) + dW (its memory grows to the float weight's)."""
        if self.merged:
            return
        if self.quantized:
            if not dequantize:
                raise TypeError(f"the base layer is quantized ({type(self.base_layer).__name__}): dW cannot be added "
                                "to packed weights. merge(dequantize=True) replaces it by a float Linear holding "
                                "dequantize(W) + dW; or keep the layers unmerged (the output is the same)")
            self._dequantize_base()
        self._merged_with, self._merged_scaling = self.coefficients.detach().clone(), self.scaling
        self._merged_version = self.coefficients._version
        self.weight_view().add_(self._merged_delta())
        self.merged = True

    def _merged_delta(self) -> torch.Tensor:
        merged = self._merged_with.to(self.coefficients.device)
        return self.plan().delta_weight(merged, self._merged_scaling).to(self.base_layer.weight.dtype)

    def _dequantize_base(self) -> None:
        old = self.base_layer
        weight = dequantized_weight(old)
        dtype = getattr(old, "compute_dtype", None) or torch.float32
        plain = nn.Linear(self.d_in, self.d_out, bias=old.bias is not None, device=weight.device, dtype=dtype)
        plain.weight.data.copy_(weight)
        if old.bias is not None:
            plain.bias.data.copy_(old.bias.data)
        plain.requires_grad_(False)
        self.base_layer, self.quantized, self.transposed = plain, False, False

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the dW that merge() added (of the coefficients at merge time, whatever they hold now)."""
        if self.merged:
            self.weight_view().sub_(self._merged_delta())
            self.merged, self._merged_with = False, None

    def extra_repr(self) -> str:
        blocks = f", blocks={self.blocks}" if self.blocks else ""
        basis = f", basis={self.basis}" if self.basis != "fourier" else ""
        return (f"d_out={self.d_out}, d_in={self.d_in}, n={self.n}, scaling={self.scaling}, path={self.path}"
                f"{blocks}{basis}")

