"""Many FourierFT adapters in one batch: each row uses its own adapter, or none, at about the cost of one adapter.

Adapters made with the same entries (seed, n, targets, f_c, fused parts, basis) differ only in their n coefficients
per layer, and for a row that uses adapter a

    dW_a x = alpha_a * Re(IDFT_M(scatter_u(c_a * gather_v(DFT_N(x)))))     (the library's normalisation)

so the two transforms are the same for every row and the only per-row step is the multiply by that row's
coefficients. The plans training runs (`plan.apply`, `plan.delta_weight`: no second copy of the spectral code) take a
(rows, 1, n) coefficient tensor in place of one vector and broadcast it over each row's tokens. Alpha enters
linearly, so it is folded into the stored coefficients and adapters trained with different alphas share a batch.

Adapters are kept in groups of equal transforms (the same entries, fused parts and basis on the same layers), one
coefficient bank per group: (adapters, n x L) float32, a row per adapter, so a resident adapter costs n x L x 4
bytes. Adapters with other entries, n, basis or targets form groups of their own and share the batch; a layer that a
group does not adapt is the base layer for that group's rows. Within a group, per layer and per forward, the plan's
flop counts choose between the shared transforms (one pair of FFTs per token, whatever the number of adapters) and one
dW per adapter present folded into that adapter's rows' GEMM (few adapters, many tokens: long prefills).

The convention is PEFT's mixed-batch one: `serve(**batch, adapter_names=[...])` and
`serve.generate(**batch, adapter_names=[...])`, one name per row, `BASE` for the base model alone. Modules an adapter
trained in full (`modules_to_save`: a classifier head) are applied per row with that adapter's weights. Folders of
this library and PEFT FourierFT folders are both read.

Refused, with the reason: adapters trained with `bias="all"` or other trained tensors inside the adapted layers (no
per-row bias), heads of another shape than the served one, adapters saved for another base model.
"""
from .layer import ServedLayer
from .mixed import BASE, STRATEGIES, MixedAdapters

__all__ = ["BASE", "STRATEGIES", "MixedAdapters", "ServedLayer"]
