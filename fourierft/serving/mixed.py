"""MixedAdapters: a base model serving many FourierFT adapters at once, each row of a batch with its own."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from ..adapter import read
from ..layer import FourierFTLayer
from ..model import set_module
from ..targets import is_within
from ..wrapped import SUPPORTED
from .bank import Adapter, Group
from .layer import Rows, ServedLayer, expand_rows

BASE = "base"
STRATEGIES = ("auto", "shared", "per_adapter")


def batch_rows(args: tuple, kwargs: dict) -> int | None:
    """The number of rows the caller passed (input_ids, inputs_embeds, pixel_values, ... or the first positional
    tensor); None when no tensor says."""
    for key in ("input_ids", "inputs_embeds", "pixel_values", "input_features", "attention_mask"):
        if torch.is_tensor(kwargs.get(key)):
            return kwargs[key].shape[0]
    first = next((a for a in args if torch.is_tensor(a)), None)
    return None if first is None else first.shape[0]


class MixedAdapters:
    """A base model serving several FourierFT adapters at once, each row of a batch with its own.

    Build it with `MixedAdapters(base_model, {"a": folder_a, "b": folder_b})`; add and remove adapters while it serves
    (`add`, `remove`). Folders of save_adapter and PEFT FourierFT folders (adapter_config.json) are both read. The
    base model is changed in place (its adapted modules are wrapped); outside `serve(...)` it is the base model.

    strategy: "auto" (the plans' flop counts choose per layer and forward), "shared" (always the shared transforms
    with per-row coefficients) or "per_adapter" (always one dW per adapter present).

    One batch at a time: the rows of a call are set on the model's layers for its duration (as PEFT's adapter_names
    are), so calls from several threads are served one after the other (a lock), and add / remove wait for the call
    in progress. Requests that arrive together are served faster batched into one call.
    """

    def __init__(self, model: nn.Module, adapters: dict[str, str | Path] | None = None, strategy: str = "auto"):
        if any(isinstance(m, (FourierFTLayer, ServedLayer)) for m in model.modules()):
            raise ValueError("MixedAdapters takes the plain base model (its adapters come from folders); this one "
                             "already has FourierFT layers")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy {strategy!r} is not one of {STRATEGIES}")
        self.model, self.strategy = model, strategy
        self.lock = threading.RLock()  # one call (or add / remove) at a time: the rows live on the shared layers
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
        adapter = self._read(Path(path))  # the file is read while other calls serve; the model changes under the lock
        with self.lock:
            self._add(name, adapter, path)

    def _add(self, name: str, adapter: Adapter, path) -> None:
        if name in self.where:
            raise ValueError(f"an adapter named {name!r} is already loaded; remove({name!r}) first to replace it")
        states, first_seen = self._trained_states(adapter.trained, adapter.entries, path)
        group = next((g for g in self.groups if g.same_transforms(adapter)), None) or self._new_group(adapter)
        # nothing above changed this object unless it succeeded whole (_new_group checks before it wraps)
        self.where[name] = (group, group.append(name, adapter))
        for module_name, (module, base) in first_seen.items():
            self.modules[module_name], self.states[module_name] = module, {BASE: base}
        for module_name, state in states.items():
            self.states[module_name][name] = state

    def remove(self, name: str) -> None:
        """Drop an adapter; its rows can no longer be asked for (a call serving it finishes first)."""
        with self.lock:
            self._remove(name)

    def _remove(self, name: str) -> None:
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
                set_module(self.model, layer_name, self.layers.pop(layer_name).base_layer)
        for per_adapter in self.states.values():
            per_adapter.pop(name, None)

    def compact(self) -> None:
        """Shrink each coefficient bank to its adapters (adds grow banks by a quarter at a time): after it, each
        resident adapter holds exactly n x L x 4 bytes. The constructor calls it after loading its adapters."""
        with self.lock:
            self._compact()

    def _compact(self) -> None:
        for group in self.groups:
            if group.bank.shape[0] > len(group.names):
                group.bank = group.bank[:len(group.names)].clone()

    def _read(self, path: Path) -> Adapter:
        file = read(self.model, path, check_base=False)
        config, entries, coefficients = file.config, file.entries, file.coefficients
        for layer_name in entries:
            coef = coefficients.get(layer_name)
            if coef is None or coef.numel() != entries[layer_name].shape[1]:
                raise ValueError(f"{file.source} has no coefficients for each of the {entries[layer_name].shape[1]} "
                                 f"entries of {layer_name!r}: the file is incomplete or was edited")
        # alpha enters linearly: stored as alpha * c, served with alpha 1
        scaled = {n: coefficients[n].float().flatten() * config.scaling for n in entries}
        return Adapter(dict(sorted(entries.items())), scaled, file.blocks, (config.basis, config.basis_seed),
                       file.trained)

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
            set_module(self.model, layer_name, self.layers[layer_name])
        for layer_name, entries in adapter.entries.items():
            layer = self.layers[layer_name]
            device = layer.base_layer.weight.device
            entries = entries.to(device)
            blocks = adapter.blocks[layer_name]
            basis, seed = adapter.basis
            plans[layer_name] = layer.plan_for(entries, blocks, basis, seed)
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
            # in the served module's dtype, as load_adapter's copy casts it (an fp32 head on a bf16 base, or back)
            by_module[module_name] = {p: t.to(device=device, dtype=base[p].dtype if p in base else t.dtype)
                                      for p, t in state.items()}
        return by_module, first_seen

    # ---------------------------------------------------------------- serving
    def __call__(self, *args, adapter_names: Sequence[str], **kwargs):
        with self.rows(adapter_names, batch_rows(args, kwargs)), torch.no_grad():
            return self.model(*args, **kwargs)

    def generate(self, *args, adapter_names: Sequence[str], **kwargs):
        """model.generate with adapter_names[i] for prompt i; beams and returned sequences (num_beams,
        num_return_sequences, from the call or the generation config) repeat each prompt's adapter."""
        config = kwargs.get("generation_config") or getattr(self.model, "generation_config", None)
        beams = kwargs.get("num_beams") or getattr(config, "num_beams", 1) or 1
        sequences = kwargs.get("num_return_sequences") or getattr(config, "num_return_sequences", 1) or 1
        # transformers expands each prompt max(num_beams, num_return_sequences) times, consecutively
        with self.rows(adapter_names, batch_rows(args, kwargs), expand=max(beams, sequences)), torch.no_grad():
            return self.model.generate(*args, **kwargs)

    @contextlib.contextmanager
    def rows(self, adapter_names: Sequence[str], batch: int | None = None, expand: int = 1) -> Iterator[None]:
        """Inside: every forward of the model uses adapter `adapter_names[i]` for batch row i (`batch`: the rows the
        caller passes, checked here; `expand`: generate's repetition of each row). One call at a time: the rows are
        set on the model's shared layers, so calls from other threads (and add/remove) wait for this one."""
        with self.lock:
            yield from self._serving(self._names(adapter_names, batch), expand)

    def _names(self, adapter_names, batch: int | None) -> list[str]:
        accepted = "adapter_names takes a list of one adapter name per batch row"
        if adapter_names is None or isinstance(adapter_names, (str, bytes)) or not isinstance(adapter_names, Sequence):
            raise ValueError(f"{accepted}, got {adapter_names!r}")
        names = list(adapter_names)
        if not names or (batch is not None and len(names) != batch):
            rows = f"a batch of {batch} rows" if batch is not None else "the batch"
            raise ValueError(f"{accepted}: got {len(names)} names for {rows}")
        if not self.where:
            raise ValueError("no adapter is loaded: add(name, folder) first")
        unknown = sorted({str(n) for n in names if n != BASE and n not in self.where})
        if unknown:
            raise KeyError(f"adapter_names {unknown} are not loaded (loaded: {self.names[1:]}; {BASE!r}: no adapter)")
        return names

    def _serving(self, names: list[str], expand: int) -> Iterator[None]:
        hooks = []
        try:
            for group in self.groups:
                keys = [self.where[n][1] if n != BASE and self.where[n][0] is group else -1 for n in names]
                if all(k < 0 for k in keys):
                    continue
                rows = Rows(group, keys, self.strategy, expand)
                for layer_name in group.layers:
                    layer = self.layers[layer_name]
                    layer.requests = (layer.requests or []) + [(group.plans[layer_name], group.spans[layer_name],
                                                                 rows)]
            for module_name, module in self.modules.items():
                hooks.append(module.register_forward_hook(self._rowwise(module_name, names, expand),
                                                          with_kwargs=True))
            yield
        finally:
            for layer in self.layers.values():
                layer.requests = None
            for hook in hooks:
                hook.remove()

    def _rowwise(self, module_name: str, names: list[str], expand: int):
        """A forward hook that recomputes the module's output per adapter on that adapter's rows."""
        states = self.states[module_name]
        inside = []  # functional_call below runs the module's hooks again: this one passes then
        first = {n: i for i, n in reversed(list(enumerate(names)))}
        index = torch.tensor([first[n] for n in names])  # rows of one name share a key

        def hook(module, args, kwargs, output):
            if inside:
                return output
            rows = expand_rows(index, output.shape[0], expand, f"module {module_name}")
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
