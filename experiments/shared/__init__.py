"""Machinery every family shares: the family contract, sources, backbones, methods, the Trainer, and a run's
bookkeeping in four parts (identity, lock, checkpoints, results). No family here."""
