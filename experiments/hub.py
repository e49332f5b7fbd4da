"""Is the Hugging Face hub reachable? Asked once, quickly, so offline machines fall back at once."""
import functools
import os
import socket
from pathlib import Path


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def local_or_hub(model_cfg, offline_default: str) -> str:
    """model.name_or_path as a local folder when it is one, else as a hub id when the hub answers."""
    path = model_cfg.name_or_path
    if Path(str(path)).expanduser().exists():
        return str(Path(path).expanduser())
    if not hub_reachable():
        raise RuntimeError(
            f"model {model_cfg.name!r} ({path}) is neither a local folder nor reachable on the Hugging Face hub; "
            f"set model.name_or_path=/local/folder, or use the offline default model={offline_default}")
    return path
