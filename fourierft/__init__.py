"""FourierFT: parameter-efficient fine-tuning with the discrete Fourier transform (Gao et al., ICML 2024).

The adapter API is below; helpers (`fourierft.targets`, `fourierft.files`, `fourierft.entries`) are imported from
their modules."""
from .adapter import adapter_bytes
from .config import FourierFTConfig
from .entries import frequency_bias, sample_entries
from .layer import FourierFTLayer
from .model import (
    apply_fourierft,
    fourierft_layers,
    load_adapter,
    merge,
    save_adapter,
    set_path,
    summary,
    trainable_parameters,
    unload,
    unmerge,
)
from .peft_interop import export_peft, import_peft
from .serving import BASE, MixedAdapters

__all__ = [
    "FourierFTConfig", "FourierFTLayer", "apply_fourierft", "merge", "unmerge", "unload", "set_path",
    "save_adapter", "load_adapter", "adapter_bytes", "export_peft", "import_peft",
    "trainable_parameters", "summary", "fourierft_layers", "sample_entries", "frequency_bias",
    "MixedAdapters", "BASE",
]
__version__ = "0.1.0"
