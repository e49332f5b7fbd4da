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
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BlockPlan, make_plan
from .config import FourierFTConfig
from .entries import check_entries
from .io import check_declared, folder_format, read_adapter
from .layer import SUPPORTED, FourierFTLayer, is_quantized, layer_shape
from .model import _set_module, fused_blocks
from .peft_interop import read_peft
from .targets import is_within

BASE = "base"
STRATEGIES = ("auto", "shared", "per_adapter")


@dataclass
class Adapter:
    """One adapter as served: per layer its entries, coefficients (alpha folded in) and fused parts; and the
    tensors it trained in full, by parameter name."""
    entries: dict[str, torch.Tensor]
    coefficients: dict[str, torch.Tensor]
    blocks: dict[str, list | None]
    basis: tuple[str, int]
    trained: dict[str, torch.Tensor]


@dataclass(eq=False)  # groups are told apart by identity (their tensors have no truth value)
class Group:
    """Adapters with equal transforms: their plans per layer, and a bank with one row of coefficients each."""
    layers: list[str]
    entries: dict[str, torch.Tensor]
    blocks: dict[str, list | None]
    basis: tuple[str, int]
    plans: dict[str, object]
    spans: dict[str, slice]  # each layer's columns in the bank
    bank: torch.Tensor
    names: list[str] = field(default_factory=list)  # bank row -> adapter name

    def same_transforms(self, adapter: Adapter) -> bool:
        return (adapter.basis == self.basis and list(adapter.entries) == self.layers
                and all(adapter.blocks[n] == self.blocks[n] and torch.equal(adapter.entries[n], self.entries[n])
                        for n in self.layers))

    def append(self, name: str, adapter: Adapter) -> int:
        """Store the adapter's coefficients in the next bank row; returns the row."""
        if len(self.names) == self.bank.shape[0]:  # grow by a quarter: adding R one by one copies O(R) rows
            grown = self.bank.new_zeros(len(self.names) + max(1, len(self.names) // 4), self.bank.shape[1])
            grown[:len(self.names)] = self.bank[:len(self.names)]
            self.bank = grown
        row = self.bank[len(self.names)]
        for layer_name, span in self.spans.items():
            row[span] = adapter.coefficients[layer_name]
        self.names.append(name)
        return len(self.names) - 1

    def drop(self, row: int) -> str | None:
        """Remove a row by moving the last one into it; returns the moved adapter's name (None if none moved)."""
        last = len(self.names) - 1
        moved = None
        if row != last:
            self.bank[row] = self.bank[last]
            self.names[row] = moved = self.names[last]
        self.names.pop()
        return moved


class ServedLayer(nn.Module):
    """A frozen Linear / Conv1D whose rows, inside `MixedAdapters.rows`, get each their adapter's dW; outside, the
    base layer itself."""

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        self.d_out, self.d_in = layer_shape(base_layer)
        self.transposed = not isinstance(base_layer, nn.Linear)
        self.quantized = is_quantized(base_layer)
        self.requests: list | None = None  # [(plan, columns, Rows)] while serving

    def weight(self) -> torch.Tensor:
        """The float weight as (d_out, d_in) (a view for Conv1D)."""
        w = self.base_layer.weight
        return w.t() if self.transposed else w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.requests:
            return self.base_layer(x)
        tokens_per_row = x[0].numel() // self.d_in
        shared, own = [], []  # (plan, rows, coefficients) for the shared transforms; (rows, plan, coef) per adapter
        for plan, columns, rows in self.requests:
            picked = rows.for_batch(x.shape[0])
            if picked is None:
                continue
            if rows.per_adapter(plan, picked, tokens_per_row, self.quantized):
                own += [(index, plan, coef) for index, coef in picked.each_adapter(columns)]
            else:
                shared.append((plan, picked.index, picked.coefficients(columns)))
        out = self._base_and_own(x, own)
        for plan, index, coef in shared:
            rows = x if index is None else x[index]
            delta = plan.apply(rows, coef.view(coef.shape[0], *([1] * (x.dim() - 2)), -1), 1.0).to(out.dtype)
            if index is None:
                out += delta
            else:
                out.index_add_(0, index, delta)
        return out

    def _base_and_own(self, x: torch.Tensor, own: list) -> torch.Tensor:
        """The base layer's output on every row, with the rows of `own` adapters through W + dW_a instead."""
        if not own:
            return self.base_layer(x)
        bias = self.base_layer.bias
        if len(own) == 1 and own[0][0] is None:  # one adapter on every row: one GEMM, no gathers
            _, plan, coef = own[0]
            return self._with_delta(x, plan, coef, bias)
        taken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        out = None
        for index, plan, coef in own:
            y = self._with_delta(x[index], plan, coef, bias)
            out = y.new_empty(x.shape[0], *y.shape[1:]) if out is None else out
            out[index] = y
            taken[index] = True
        rest = (~taken).nonzero().squeeze(1)
        if rest.numel():
            out[rest] = self.base_layer(x[rest]).to(out.dtype)
        return out

    def _with_delta(self, x, plan, coef, bias):
        delta = plan.delta_weight(coef, 1.0)
        if self.quantized:  # packed weight: dW x beside it
            return self.base_layer(x) + F.linear(x, delta.to(x.dtype))
        w = self.weight()
        return F.linear(x.to(w.dtype), w + delta.to(w.dtype), bias)


class Rows:
    """One group's share of a batch: which rows use it and their bank rows; expanded on demand for generate's beams
    (which repeat each request's row), and the gathered coefficients cached per batch size."""

    def __init__(self, group: Group, keys: list[int], strategy: str):
        self.group, self.strategy = group, strategy
        device = group.bank.device
        self.keys = torch.tensor(keys, device=device)  # per request: bank row, -1 for rows of other groups
        self.cache: dict[int, Picked | None] = {}

    def for_batch(self, size: int):
        if size not in self.cache:
            keys = expand_rows(self.keys, size, "a served layer")
            mine = keys >= 0
            if not mine.any():
                self.cache[size] = None
            else:
                index = None if mine.all() else mine.nonzero().squeeze(1)
                self.cache[size] = Picked(self.group.bank, keys if index is None else keys[index], index)
        return self.cache[size]

    def per_adapter(self, plan, picked: Picked, tokens_per_row: int, quantized: bool) -> bool:
        if self.strategy != "auto":
            return self.strategy == "per_adapter"
        if quantized:  # a packed weight cannot take dW into its GEMM: per adapter would add a GEMM
            return False
        merged, spectral = plan.costs(picked.rows * tokens_per_row)
        # both counts are of a training step (two dW builds, two transforms per token): their halves are a forward's
        return picked.adapters * merged <= spectral


class Picked:
    """The rows of a batch that one group serves: `index` into the batch (None: every row) and their bank rows."""

    def __init__(self, bank: torch.Tensor, keys: torch.Tensor, index):
        self.keys, self.index, self.rows = keys, index, keys.numel()
        self.gathered = bank[keys]  # one gather for every layer of the group
        self.unique = keys.unique()
        self.adapters = self.unique.numel()
        self.split = None  # per adapter present: (batch index, one of its rows), made on first use

    def coefficients(self, columns: slice) -> torch.Tensor:
        return self.gathered[:, columns]

    def each_adapter(self, columns: slice):
        """(batch index or None, coefficients) per adapter present."""
        if self.adapters == 1:
            return [(self.index, self.gathered[0, columns])]
        if self.split is None:  # once per batch, not per layer
            self.split = []
            for key in self.unique:
                mine = (self.keys == key).nonzero().squeeze(1)
                self.split.append((mine if self.index is None else self.index[mine], int(mine[0])))
        return [(index, self.gathered[first, columns]) for index, first in self.split]


class MixedAdapters:
    """A base model serving several FourierFT adapters at once, each row of a batch with its own.

    Build it with `MixedAdapters(base_model, {"a": folder_a, "b": folder_b})`; add and remove adapters while it serves
    (`add`, `remove`). Folders of save_adapter and PEFT FourierFT folders (adapter_config.json) are both read. The
    base model is changed in place (its adapted modules are wrapped); outside `serve(...)` it is the base model.

    strategy: "auto" (the plans' flop counts choose per layer and forward), "shared" (always the shared transforms
    with per-row coefficients) or "per_adapter" (always one dW per adapter present).

    One batch at a time: the rows of a call are set on the model's layers for its duration (as PEFT's adapter_names
    are), so concurrent calls need a MixedAdapters (and model) each.
    """

    def __init__(self, model: nn.Module, adapters: dict[str, str | Path] | None = None, strategy: str = "auto"):
        if any(isinstance(m, (FourierFTLayer, ServedLayer)) for m in model.modules()):
            raise ValueError("MixedAdapters takes the plain base model (its adapters come from folders); this one "
                             "already has FourierFT layers")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy {strategy!r} is not one of {STRATEGIES}")
        self.model, self.strategy = model, strategy
        self.base_class = type(model).__name__
        self.groups: list[Group] = []
        self.where: dict[str, tuple[Group, int]] = {}  # name -> (group, bank row)
        self.layers: dict[str, ServedLayer] = {}
        self.modules: dict[str, nn.Module] = {}  # modules some adapter trained in full, by name
        self.states: dict[str, dict[str, dict[str, torch.Tensor]]] = {}  # module -> adapter (or BASE) -> tensors
        for name, path in (adapters or {}).items():
            self.add(name, path)
        self.compact()

    @property
    def names(self) -> list[str]:
        return [BASE] + list(self.where)

    # ---------------------------------------------------------------- adapters
    def add(self, name: str, path) -> None:
        """Make the adapter saved at `path` (save_adapter's folder, or a PEFT FourierFT folder) available as `name`."""
        if not isinstance(name, str) or not name or name == BASE:
            raise ValueError(f"adapter name {name!r}: use a non-empty name other than {BASE!r} (the base model)")
        if name in self.where:
            raise ValueError(f"an adapter named {name!r} is already loaded; remove({name!r}) first to replace it")
        adapter = self._read(Path(path))
        states, first_seen = self._trained_states(adapter.trained, adapter.entries, path)
        group = next((g for g in self.groups if g.same_transforms(adapter)), None) or self._new_group(adapter)
        # nothing above changed this object unless it succeeded whole (_new_group checks before it wraps)
        self.where[name] = (group, group.append(name, adapter))
        for module_name, (module, base) in first_seen.items():
            self.modules[module_name], self.states[module_name] = module, {BASE: base}
        for module_name, state in states.items():
            self.states[module_name][name] = state

    def remove(self, name: str) -> None:
        """Drop an adapter; its rows can no longer be asked for."""
        if name == BASE or name not in self.where:
            raise KeyError(f"no adapter named {name!r} is loaded (loaded: {self.names[1:]})")
        group, row = self.where.pop(name)
        moved = group.drop(row)
        if moved is not None:
            self.where[moved] = (group, row)
        if not group.names:
            self.groups.remove(group)
            used = {n for g in self.groups for n in g.layers}
            for layer_name in [n for n in self.layers if n not in used]:  # no adapter left there: the plain module
                _set_module(self.model, layer_name, self.layers.pop(layer_name).base_layer)
        for per_adapter in self.states.values():
            per_adapter.pop(name, None)

    def compact(self) -> None:
        """Shrink each coefficient bank to its adapters (adds grow banks by a quarter at a time): after it, each
        resident adapter holds exactly n x L x 4 bytes. The constructor calls it after loading its adapters."""
        for group in self.groups:
            if group.bank.shape[0] > len(group.names):
                group.bank = group.bank[:len(group.names)].clone()

    def _read(self, path: Path) -> Adapter:
        if folder_format(path) == "peft":
            config, entries, coefficients, trained = read_peft(self.model, path)
        else:
            meta, tensors = read_adapter(path)
            config = FourierFTConfig.from_dict(meta["config"])
            if meta["base_model"]["class"] != self.base_class:
                raise ValueError(f"adapter {path} was saved for a {meta['base_model']['class']}, not a "
                                 f"{self.base_class}")
            self._check_shapes(meta["base_model"]["layers"], path)
            entries = {k[len("entries/"):]: v.long() for k, v in tensors.items() if k.startswith("entries/")}
            coefficients = {k[len("coefficients/"):]: v for k, v in tensors.items() if k.startswith("coefficients/")}
            trained = {k[len("trained/"):]: v for k, v in tensors.items() if k.startswith("trained/")}
        blocks = {}
        for layer_name in entries:
            d_out, d_in = layer_shape(self._module(layer_name))
            blocks[layer_name] = parts = fused_blocks(layer_name, d_out, d_in, config)
            try:
                check_entries(entries[layer_name], parts[0][1] if parts else d_out, d_in, len(parts or [1]))
            except ValueError as e:
                raise ValueError(f"adapter {path}, module {layer_name!r}: {e}; the file was edited or is "
                                 "corrupted") from None
            coef = coefficients.get(layer_name)
            if coef is None or coef.numel() != entries[layer_name].shape[1]:
                raise ValueError(f"adapter {path} has no coefficients for each of the {entries[layer_name].shape[1]} "
                                 f"entries of {layer_name!r}: the file is incomplete or was edited")
        check_declared(self.model, config, trained, f"adapter {path}")
        # alpha enters linearly: stored as alpha * c, served with alpha 1
        scaled = {n: coefficients[n].float().flatten() * config.scaling for n in entries}
        return Adapter(dict(sorted(entries.items())), scaled, blocks, (config.basis, config.basis_seed), trained)

    def _check_shapes(self, recorded: dict, path) -> None:
        for layer_name, shape in recorded.items():
            try:
                module = self._module(layer_name)
            except AttributeError:
                module = None
            found = list(layer_shape(module)) if isinstance(module, SUPPORTED) else None
            if found != list(shape):
                got = "missing" if module is None else found or type(module).__name__
                raise ValueError(f"adapter {path} adapts {layer_name!r} of shape {shape}, which this "
                                 f"{self.base_class} has as {got}: it was saved for another base model")

    def _module(self, layer_name: str) -> nn.Module:
        module = self.model.get_submodule(layer_name)
        return module.base_layer if isinstance(module, ServedLayer) else module

    def _new_group(self, adapter: Adapter) -> Group:
        device = None
        plans, spans, start = {}, {}, 0
        new = {n: self.model.get_submodule(n) for n in adapter.entries if n not in self.layers}
        wrong = {n: type(m).__name__ for n, m in new.items() if not isinstance(m, SUPPORTED)}
        if wrong:  # checked before any layer is wrapped, so a refused adapter leaves the model as it was
            raise TypeError(f"modules {wrong} are not served: FourierFT serves torch.nn.Linear and transformers' "
                            "Conv1D")
        for layer_name, module in new.items():
            self.layers[layer_name] = ServedLayer(module)
            _set_module(self.model, layer_name, self.layers[layer_name])
        for layer_name, entries in adapter.entries.items():
            layer = self.layers[layer_name]
            device = layer.base_layer.weight.device
            entries = entries.to(device)
            blocks = adapter.blocks[layer_name]
            basis, seed = adapter.basis
            plans[layer_name] = (BlockPlan(entries, layer.d_out, layer.d_in, blocks, basis, seed) if blocks
                                 else make_plan(entries, layer.d_out, layer.d_in, basis, seed))
            n = entries.shape[1]
            spans[layer_name] = slice(start, start + n)
            start += n
        group = Group(list(adapter.entries), {n: e.to(device) for n, e in adapter.entries.items()}, adapter.blocks,
                      adapter.basis, plans, spans, torch.zeros(0, start, device=device))
        self.groups.append(group)
        return group

    def _trained_states(self, trained: dict, adapted, path) -> tuple[dict, dict]:
        """The adapter's fully trained tensors, grouped by the module that owns them (a head), and the modules
        among those that no loaded adapter trains yet. Nothing is registered here: add() does it once all passed."""
        by_module: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in trained.items():
            module_name, _, param = key.rpartition(".")
            if any(is_within(module_name, n) for n in list(adapted) + list(self.layers)):
                raise ValueError(f"adapter {path} trains {key} inside an adapted layer (bias='all'): per-row biases "
                                 "of adapted layers are not served; serve it alone (load_adapter) or merged")
            by_module.setdefault(module_name, {})[param] = tensor
        first_seen = {}  # modules no loaded adapter trains yet: (module, its base tensors)
        for module_name, state in by_module.items():
            module = self.model.get_submodule(module_name)
            if module_name not in self.modules:
                base = {p: t.detach().clone() for p, t in module.named_parameters(recurse=True) if p in state}
                base.update({b: t.detach().clone() for b, t in module.named_buffers() if b in state})
                first_seen[module_name] = (module, base)
            else:
                base = self.states[module_name][BASE]
            wrong = {p: (list(t.shape), list(base[p].shape)) for p, t in state.items()
                     if p in base and t.shape != base[p].shape}
            if wrong:
                raise ValueError(f"adapter {path} trained {module_name} with shapes {wrong} (adapter's, served "
                                 "model's): rows of one batch share the module's shape (a head for another number "
                                 "of labels cannot be served beside this one)")
            device = next(module.parameters()).device
            by_module[module_name] = {p: t.to(device) for p, t in state.items()}
        return by_module, first_seen

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
        if not self.where:
            raise ValueError("no adapter is loaded: add(name, folder) first")
        if isinstance(adapter_names, str):
            raise TypeError("adapter_names takes one name per batch row (a list), not a single string")
        names = list(adapter_names)
        if not names:
            raise ValueError("adapter_names is empty: give one name per batch row")
        unknown = sorted({n for n in names if n != BASE and n not in self.where})
        if unknown:
            raise KeyError(f"adapter_names {unknown} are not loaded (loaded: {self.names[1:]}; {BASE!r}: no adapter)")
        hooks = []
        try:
            for group in self.groups:
                keys = [self.where[n][1] if n != BASE and self.where[n][0] is group else -1 for n in names]
                if all(k < 0 for k in keys):
                    continue
                rows = Rows(group, keys, self.strategy)
                for layer_name in group.layers:
                    layer = self.layers[layer_name]
                    layer.requests = (layer.requests or []) + [(group.plans[layer_name], group.spans[layer_name],
                                                                 rows)]
            for module_name, module in self.modules.items():
                hooks.append(module.register_forward_hook(self._rowwise(module_name, names), with_kwargs=True))
            yield
        finally:
            for layer in self.layers.values():
                layer.requests = None
            for hook in hooks:
                hook.remove()

    def _rowwise(self, module_name: str, names: list[str]):
        """A forward hook that recomputes the module's output per adapter on that adapter's rows."""
        states = self.states[module_name]
        inside = []  # functional_call below runs the module's hooks again: this one passes then
        first = {n: i for i, n in reversed(list(enumerate(names)))}
        index = torch.tensor([first[n] for n in names])  # rows of one name share a key

        def hook(module, args, kwargs, output):
            if inside:
                return output
            rows = expand_rows(index, output.shape[0], f"module {module_name}")
            result = output.clone()
            for key in rows.unique().tolist():
                state = states.get(names[key], states[BASE])
                mask = (rows == key).to(output.device)
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
        """Bytes the loaded adapters hold (not the base model): the coefficient banks as allocated (n x L x 4 per
        adapter after `compact`, at most a quarter more after one-by-one adds) and the per-adapter modules."""
        banks = sum(g.bank.numel() * g.bank.element_size() for g in self.groups)
        heads = sum(t.numel() * t.element_size() for per_adapter in self.states.values()
                    for name, state in per_adapter.items() if name != BASE for t in state.values())
        return banks + heads


def expand_rows(index: torch.Tensor, rows: int, what: str) -> torch.Tensor:
    """`index` (one entry per request) for a tensor of `rows` rows: generate's beam search and num_return_sequences
    repeat each request's row consecutively."""
    if rows == len(index):
        return index
    if rows % len(index):
        raise ValueError(f"{what} sees {rows} rows for {len(index)} adapter_names: give one name per batch row")
    return index.repeat_interleave(rows // len(index))

