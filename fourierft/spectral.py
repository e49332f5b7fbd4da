"""The math of dW = alpha * Re(ifft2(S)) for a sparse S, without ever forming a weight gradient.

Notation: M = d_out, N = d_in, entries (u_k, v_k), coefficients c_k, X = fft(x) along features,
G = fft(dL/dy). The identities (see docs/design/fast-path.md):
  dW x    = alpha/N * Re ifft_M( scatter_u( c * conj(X[v]) ) )
  dW^T g  = alpha/M * Re ifft_N( scatter_v( c * conj(G[u]) ) )
  dL/dc_k = alpha/(M N) * Re sum_t G_t[u_k] X_t[v_k]
Only half spectra are computed (rfft / irfft): a bin b > d/2 is read as conj of bin d - b, and
Re(ifft(Z)) = irfft of the Hermitian half 0.5 * (Z[b] + conj(Z[-b])).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .plan import Plan


def _half(idx: torch.Tensor, d: int):
    """Where bin idx lives in a length-d rfft, and whether it must be conjugated there."""
    mirrored = idx > d // 2
    return torch.where(mirrored, d - idx, idx), mirrored


def _hermitian_fold(idx: torch.Tensor, d: int):
    """Scatter plan that turns a full length-d spectrum Z (given at idx) into the half spectrum of
    Re(ifft(Z)): each term lands at idx (as 0.5 z) and at -idx (as 0.5 conj z) when those are <= d/2."""
    neg = (-idx) % d
    keep_pos = idx <= d // 2
    keep_neg = neg <= d // 2
    src = torch.arange(idx.numel(), device=idx.device)
    conj = torch.cat([torch.zeros_like(idx[keep_pos], dtype=torch.bool),
                      torch.ones_like(idx[keep_neg], dtype=torch.bool)])
    return torch.cat([idx[keep_pos], neg[keep_neg]]), torch.cat([src[keep_pos], src[keep_neg]]), conj


class SpectralPlan(Plan):
    """Index arrays derived once from a layer's entries; shared by every forward of that layer."""

    def __init__(self, entries: torch.Tensor, d_out: int, d_in: int):
        u, v = entries[0].long(), entries[1].long()
        self.d_out, self.d_in, self.n = d_out, d_in, u.numel()
        self.u, self.v = u, v
        self.u_half, self.u_conj = _half(u, d_out)
        self.v_half, self.v_conj = _half(v, d_in)
        self.out_fold = _hermitian_fold(u, d_out)
        self.in_fold = _hermitian_fold(v, d_in)
        # Re(G[u] X[v]) = Gr Xr - sign * Gi Xi: reading a mirrored bin off a half spectrum conjugates it, and
        # conjugating exactly one of the two factors flips the sign of the Gi Xi term
        self.pair_sign = torch.where(self.u_conj ^ self.v_conj, -1.0, 1.0)
        # 2-D fold onto the (d_out, d_in // 2 + 1) half spectrum that irfft2 reads
        neg_u, neg_v = (-u) % d_out, (-v) % d_in
        keep_pos, keep_neg = v <= d_in // 2, neg_v <= d_in // 2
        width = d_in // 2 + 1
        src = torch.arange(self.n, device=u.device)
        self.w_index = torch.cat([(u * width + v)[keep_pos], (neg_u * width + neg_v)[keep_neg]])
        self.w_src = torch.cat([src[keep_pos], src[keep_neg]])
        self.device = u.device

    def delta_weight(self, coef: torch.Tensor, scaling: float) -> torch.Tensor:
        """alpha * Re(ifft2(S)) as a dense (d_out, d_in) float32 matrix, via one irfft2."""
        width = self.d_in // 2 + 1
        half = torch.zeros(self.d_out * width, dtype=torch.complex64, device=coef.device)
        half.index_add_(0, self.w_index, (0.5 * coef.float())[self.w_src].to(torch.complex64))
        return torch.fft.irfft2(half.view(self.d_out, width), s=(self.d_out, self.d_in)) * scaling

    def apply(self, x: torch.Tensor, coef: torch.Tensor, scaling: float, transpose: bool = False) -> torch.Tensor:
        """dW @ x (or dW^T @ x) along the last axis of x, in float32, without forming dW."""
        if transpose:
            d_src, d_dst = self.d_out, self.d_in
            src_half, src_conj, fold = self.u_half, self.u_conj, self.in_fold
        else:
            d_src, d_dst = self.d_in, self.d_out
            src_half, src_conj, fold = self.v_half, self.v_conj, self.out_fold
        spec = torch.fft.rfft(x.float(), dim=-1)[..., src_half]
        # conj(X[b]) is X'[d - b] itself for a mirrored bin, else conj(X'[b])
        z = torch.where(src_conj, spec, spec.conj()) * coef.float()
        dst, src, conj = fold
        terms = 0.5 * z[..., src]
        terms = torch.where(conj, terms.conj(), terms)
        half = torch.zeros(*x.shape[:-1], d_dst // 2 + 1, dtype=terms.dtype, device=x.device)
        half.index_add_(-1, dst, terms)
        return torch.fft.irfft(half, n=d_dst, dim=-1) * (scaling / d_src)

    def coef_grad(self, x: torch.Tensor, grad_out: torch.Tensor, scaling: float) -> torch.Tensor:
        """dL/dc from the layer input and the output gradient: no d_out x d_in product."""
        xs = torch.fft.rfft(x.reshape(-1, self.d_in).float(), dim=-1)[:, self.v_half]
        gs = torch.fft.rfft(grad_out.reshape(-1, self.d_out).float(), dim=-1)[:, self.u_half]
        sums = (torch.view_as_real(gs) * torch.view_as_real(xs)).sum(0)
        return (sums[:, 0] - self.pair_sign * sums[:, 1]) * (scaling / (self.d_out * self.d_in))

    def costs(self, tokens: int) -> tuple[float, float]:
        """(merged, spectral) flop counts of what differs between the two paths: two irfft2 of dW per step for
        merged, an output and an input-gradient transform per token (plus the scatters) for spectral."""
        m, n_in = self.d_out, self.d_in
        merged = 2 * m * n_in * math.log2(max(m * n_in, 2))
        spectral = 2 * tokens * (m * math.log2(max(m, 2)) + n_in * math.log2(max(n_in, 2))) + 4 * tokens * self.n
        return merged, spectral

    def dense_delta_weight(self, coef: torch.Tensor, scaling: float) -> torch.Tensor:
        """The reference formula (autograd-differentiable): what the dense path trains through."""
        return dense_delta_weight(torch.stack([self.u, self.v]), coef, self.d_out, self.d_in, scaling)


def _autocast_dtype(x: torch.Tensor):
    """The dtype autocast runs x's device in, or None outside autocast."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


def dense_delta_weight(entries: torch.Tensor, coef: torch.Tensor, d_out: int, d_in: int,
                       scaling: float) -> torch.Tensor:
    """The reference formula, differentiable by autograd: alpha * Re(ifft2(dense spectrum))."""
    spectrum = torch.zeros(d_out, d_in, dtype=torch.float32, device=coef.device)
    spectrum = spectrum.index_put((entries[0], entries[1]), coef.float())
    return torch.fft.ifft2(spectrum).real * scaling


class MergedLinear(torch.autograd.Function):
    """y = x (W + dW)^T + b with dW rebuilt in backward rather than kept alive."""

    @staticmethod
    def forward(ctx, x, coef, weight, bias, plan: SpectralPlan, scaling: float):
        # weight is (d_out, d_in), possibly a transposed view of a Conv1D weight
        merged = weight + plan.delta_weight(coef, scaling).to(weight.dtype)
        out = F.linear(x.to(merged.dtype), merged, None if bias is None else bias.to(merged.dtype))
        ctx.save_for_backward(x, coef, weight)
        ctx.plan, ctx.scaling, ctx.has_bias = plan, scaling, bias is not None
        # backward runs outside autocast: remember it so the input-gradient GEMM runs in the forward's precision
        ctx.autocast_dtype = _autocast_dtype(x)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, coef, weight = ctx.saved_tensors
        plan, scaling = ctx.plan, ctx.scaling
        grad_x = grad_coef = grad_bias = None
        if ctx.needs_input_grad[0]:
            merged = weight + plan.delta_weight(coef, scaling).to(weight.dtype)
            if ctx.autocast_dtype is not None:
                merged = merged.to(ctx.autocast_dtype)
            grad_x = (grad_out.to(merged.dtype) @ merged).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_coef = plan.coef_grad(x, grad_out, scaling)
        grad_weight = None
        if ctx.needs_input_grad[2]:  # the frozen weight made trainable (e.g. full fine-tuning on top)
            flat_g, flat_x = grad_out.reshape(-1, grad_out.shape[-1]), x.reshape(-1, x.shape[-1])
            grad_weight = (flat_g.to(weight.dtype).T @ flat_x.to(weight.dtype))
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_bias = grad_out.reshape(-1, grad_out.shape[-1]).sum(0)
        return grad_x, grad_coef, grad_weight, grad_bias, None, None


class SpectralDelta(torch.autograd.Function):
    """dW x applied in the frequency domain: dW never exists, in forward or backward."""

    @staticmethod
    def forward(ctx, x, coef, plan: SpectralPlan, scaling: float):
        ctx.save_for_backward(x, coef)
        ctx.plan, ctx.scaling = plan, scaling
        # under autocast the frozen base returns the autocast dtype: match it so the sum keeps that dtype
        return plan.apply(x, coef, scaling).to(_autocast_dtype(x) or x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, coef = ctx.saved_tensors
        plan, scaling = ctx.plan, ctx.scaling
        grad_x = grad_coef = None
        if ctx.needs_input_grad[0]:
            grad_x = plan.apply(grad_out, coef, scaling, transpose=True).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_coef = plan.coef_grad(x, grad_out, scaling)
        return grad_x, grad_coef, None, None
