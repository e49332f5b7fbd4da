"""Many FourierFT adapters in one batch: each row uses its own adapter, or none, at about the cost of one adapter.

Adapters made with the same entries (seed, n, targets, f_c, fused parts) differ only in their n coefficients per
layer, and for a row that uses adapter a

    dW_a x = alpha * Re(IDFT_M(scatter_u(c_a * gather_v(DFT_N(x)))))     (the library's normalisation)

so the two transforms are the same for every row and the only per-row step is the multiply by that row's
coefficients. The layer's plan (`plan.apply`, the code training runs) takes a (rows, 1, n) coefficient tensor in
place of one vector and broadcasts it over the row's tokens. Where building one dW per adapter present costs less
than those per-token transforms (few adapters, many tokens: the plan's flop counts decide, as they choose a training
path), each adapter's rows go through the layer's usual path instead. A resident adapter costs n x L floats.

The convention is PEFT's mixed-batch one: `serve(**batch, adapter_names=[...])` and
`serve.generate(**batch, adapter_names=[...])`, one name per row, `BASE` for the base model alone. Modules an adapter
trained in full (`modules_to_save`: a classifier head) are applied per row with that adapter's weights.

Not served (refused with the reason): adapters whose entries, basis or fused parts differ from the first one's
(their transforms differ: serve them from a second model), and adapters trained with `bias="all"` or other trained
tensors inside the adapted layers.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from .config import FourierFTConfig
from .io import read_adapter
from .layer import FourierFTLayer, expand_rows
from .model import apply_fourierft, fourierft_layers

BASE = "base"


class MixedAdapters:
    """A base model serving several FourierFT adapters at once, each row of a batch with its own.

    Build it with `MixedAdapters(base_model, {"a": folder_a, "b": folder_b})`; add and remove adapters while it serves
    (`add`, `remove`). The base model is changed in place (FourierFT layers are put in); rows named `BASE` see the
    base model as it was.
    """

    def __init__(self, model: nn.Module, adapters: dict[str, str | Path] | None = None):
        if any(True for _ in fourierft_layers(model)):
            raise ValueError("MixedAdapters takes the plain base model (its FourierFT layers come from the first "
                             "adapter added); this one already has FourierFT layers")
        self.model = model
        self.base_class = type(model).__name__
        self.names: list[str] = [BASE]
        self.layers: dict[str, FourierFTLayer] = {}
        self.coefficients: dict[str, list[torch.Tensor]] = {}  # per layer, one row per name (BASE: zeros)
        self.modules: dict[str, nn.Module] = {}  # modules some adapter trained in full, by name
        self.states: dict[str, dict[str, dict[str, torch.Tensor]]] = {}  # module -> adapter (or BASE) -> tensors
        self.reference: dict | None = None  # what every adapter must share with the first (entries, basis, parts)
        self._banks: dict[str, torch.Tensor] = {}  # per layer, the rows stacked (rebuilt after add / remove)
        for name, path in (adapters or {}).items():
            self.add(name, path)

    # ---------------------------------------------------------------- adapters
    def add(self, name: str, path) -> None:
        """Make the adapter saved at `path` (save_adapter's folder) available under `name`."""
        if not isinstance(name, str) or not name or name == BASE:
            raise ValueError(f"adapter name {name!r}: use a non-empty name other than {BASE!r} (the base model)")
        if name in self.names:
            raise ValueError(f"an adapter named {name!r} is already loaded; remove({name!r}) first to replace it")
        meta, tensors = read_adapter(path)
        config = FourierFTConfig.from_dict(meta["config"])
        if meta["base_model"]["class"] != self.base_class:
            raise ValueError(f"adapter {path} was saved for a {meta['base_model']['class']}, not a {self.base_class}")
        entries = {k[len("entries/"):]: v.long() for k, v in tensors.items() if k.startswith("entries/")}
        coefficients = {k[len("coefficients/"):]: v for k, v in tensors.items() if k.startswith("coefficients/")}
        trained = {k[len("trained/"):]: v for k, v in tensors.items() if k.startswith("trained/")}
        if not self.layers:
            self._build(config, entries, trained, meta, path)
        self._check_same_transforms(config, entries, meta, path)
        states = self._trained_states(trained, path)
        self.names.append(name)
        for layer_name, layer in self.layers.items():
            # alpha enters linearly: an adapter trained with another alpha is the same transform at scaled c
            c = coefficients[layer_name].to(layer.coefficients.device, torch.float32)
            self.coefficients[layer_name].append(c * (config.scaling / layer.scaling))
        for module_name, state in states.items():
            self.states[module_name][name] = state
        self._banks.clear()

    def remove(self, name: str) -> None:
        """Drop an adapter; its rows can no longer be asked for."""
        if name == BASE or name not in self.names:
            raise KeyError(f"no adapter named {name!r} is loaded (loaded: {self.names[1:]})")
        i = self.names.index(name)
        del self.names[i]
        for rows in self.coefficients.values():
            del rows[i]
        for per_adapter in self.states.values():
            per_adapter.pop(name, None)
        self._banks.clear()

    def _build(self, config: FourierFTConfig, entries: dict, trained: dict, meta: dict, path) -> None:
        # apply_fourierft leaves the modules adapters train in full as the base has them: BASE rows use those
        apply_fourierft(self.model, config, entries=entries)
        self.layers = dict(fourierft_layers(self.model))
        expected = meta["base_model"]["layers"]
        shapes = {n: [layer.d_out, layer.d_in] for n, layer in self.layers.items()}
        if shapes != expected:
            raise ValueError(f"adapter {path} targets layers {sorted(expected)} of shapes it recorded; this model's "
                             f"are {sorted(shapes)}: it was saved for another base model")
        for layer_name, layer in self.layers.items():
            layer.coefficients.requires_grad_(False).zero_()  # outside serve(), the model is the base model
            self.coefficients[layer_name] = [torch.zeros_like(layer.coefficients, dtype=torch.float32)]
        self.reference = {"entries": {n: layer.entries.clone() for n, layer in self.layers.items()},
                          "basis": (config.basis, config.basis_seed),
                          "blocks": {n: layer.blocks for n, layer in self.layers.items()}}

    def _check_same_transforms(self, config: FourierFTConfig, entries: dict, meta: dict, path) -> None:
        if set(entries) != set(self.layers):
            raise ValueError(f"adapter {path} adapts layers {sorted(entries)}, the served ones are "
                             f"{sorted(self.layers)}: adapters served together must adapt the same layers")
        if (config.basis, config.basis_seed) != self.reference["basis"]:
            raise ValueError(f"adapter {path} uses basis {config.basis!r} (seed {config.basis_seed}), the served ones "
                             f"{self.reference['basis']}: serve it from another model")
        for layer_name, layer in self.layers.items():
            if not torch.equal(entries[layer_name].to(layer.entries.device), self.reference["entries"][layer_name]):
                raise ValueError(f"adapter {path} has other spectral entries than the served adapters (layer "
                                 f"{layer_name}: another seed, n, f_c or fused parts), so its transforms differ; "
                                 "adapters served in one batch share their entries: serve it from another model")

    def _trained_states(self, trained: dict, path) -> dict[str, dict[str, torch.Tensor]]:
        """The adapter's fully trained tensors, grouped by the module that owns them (a head)."""
        by_module: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in trained.items():
            module_name, _, param = key.rpartition(".")
            module = self.model.get_submodule(module_name) if module_name else self.model
            if any(isinstance(m, FourierFTLayer) for m in _parents(self.model, module_name)):
                raise ValueError(f"adapter {path} trains {key} inside an adapted layer (bias='all'): per-row biases "
                                 "of adapted layers are not served; serve it alone (load_adapter) or merged")
            by_module.setdefault(module_name, {})[param] = tensor
        for module_name, state in by_module.items():
            module = self.model.get_submodule(module_name)
            if module_name not in self.modules:
                self.modules[module_name] = module
                base = {p: t.detach().clone() for p, t in module.named_parameters(recurse=True) if p in state}
                base.update({b: t.detach().clone() for b, t in module.named_buffers() if b in state})
                self.states[module_name] = {BASE: base}
            base = self.states[module_name][BASE]
            wrong = {p: (list(t.shape), list(base[p].shape)) for p, t in state.items()
                     if p in base and t.shape != base[p].shape}
            if wrong:
                raise ValueError(f"adapter {path} trained {module_name} with shapes {wrong} (adapter's, served "
                                 "model's): rows of one batch share the module's shape (a head for another number "
                                 "of labels cannot be served beside this one)")
            device = next(module.parameters()).device
            by_module[module_name] = {p: t.to(device) for p, t in state.items()}
        return by_module

    # ---------------------------------------------------------------- serving
    def __call__(self, *args, adapter_names: Sequence[str], **kwargs):
        with self.rows(adapter_names), torch.no_grad():
            return self.model(*args, **kwargs)

    def generate(self, *args, adapter_names: Sequence[str], **kwargs):
        with self.rows(adapter_names), torch.no_grad():
            return self.model.generate(*args, **kwargs)

    @contextlib.contextmanager
    def rows(self, adapter_names: Sequence[str]) -> Iterator[None]:
        """Inside: every forward of the model uses adapter `adapter_names[i]` for batch row i."""
        if not self.layers:
            raise ValueError("no adapter is loaded: add(name, folder) first")
        if isinstance(adapter_names, str):
            raise TypeError("adapter_names takes one name per batch row (a list), not a single string")
        position = {n: i for i, n in enumerate(self.names)}
        unknown = sorted({n for n in adapter_names if n not in position})
        if unknown:
            raise KeyError(f"adapter_names {unknown} are not loaded (loaded: {self.names[1:]}; {BASE!r}: no adapter)")
        index = [position[n] for n in adapter_names]
        if not index:
            raise ValueError("adapter_names is empty: give one name per batch row")
        hooks = []
        try:
            if not self._banks:
                self._banks = {n: torch.stack(rows) for n, rows in self.coefficients.items()}
            for layer_name, layer in self.layers.items():
                bank = self._banks[layer_name]
                keys = torch.tensor(index, device=bank.device)
                layer.row_coefficients, layer.row_keys = bank[keys], keys
            for module_name, module in self.modules.items():
                hooks.append(module.register_forward_hook(self._rowwise(module_name, index), with_kwargs=True))
            yield
        finally:
            for layer in self.layers.values():
                layer.row_coefficients = layer.row_keys = None
            for hook in hooks:
                hook.remove()

    def _rowwise(self, module_name: str, index: list[int]):
        """A forward hook that recomputes the module's output per adapter on that adapter's rows."""
        states = self.states[module_name]
        inside = []  # functional_call below runs the module's hooks again: this one passes then

        def hook(module, args, kwargs, output):
            if inside:
                return output
            rows = expand_rows(torch.tensor(index), output.shape[0], f"module {module_name}")
            result = output.clone()
            for i in rows.unique().tolist():
                name = self.names[i]
                state = states.get(name, states[BASE])
                mask = (rows == i).to(output.device)
                sub_args = tuple(a[mask] if torch.is_tensor(a) and a.shape[:1] == rows.shape else a for a in args)
                sub_kwargs = {k: v[mask] if torch.is_tensor(v) and v.shape[:1] == rows.shape else v
                              for k, v in kwargs.items()}
                inside.append(True)
                try:
                    result[mask] = torch.func.functional_call(module, state, sub_args, sub_kwargs, strict=False)
                finally:
                    inside.pop()
            return result
        return hook

    def resident_bytes(self) -> int:
        """Bytes the loaded adapters' coefficients and per-row modules hold (not the base model)."""
        coef = sum(t.numel() * t.element_size() for rows in self.coefficients.values() for t in rows[1:])
        heads = sum(t.numel() * t.element_size() for per_adapter in self.states.values()
                    for name, state in per_adapter.items() if name != BASE for t in state.values())
        return coef + heads


def _parents(model: nn.Module, name: str) -> Iterator[nn.Module]:
    parts = name.split(".") if name else []
    for i in range(len(parts) + 1):
        yield model.get_submodule(".".join(parts[:i])) if i else model
