"""The adapters a served model holds: each as read (entries, coefficients with alpha folded in, trained tensors),
and the groups of adapters with equal transforms, one coefficient bank (a row per adapter) each."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


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
