"""Where data and models come from: a configured local path, else the Hugging Face hub, else local fallbacks,
else one error that names the setting to change. Every loader of the suite goes through `resolve_source`."""
from __future__ import annotations

import functools
import gzip
import lzma
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional, TypeVar

T = TypeVar("T")


COMPRESSED = {".xz": lzma.open, ".gz": gzip.open}


def local_file(path: Path) -> Path | None:
    """`path`, or its compressed copy (`path`.xz or .gz) where only that exists (the repository's data/ holds its
    copies compressed); None when neither is a file."""
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in COMPRESSED)):
        if candidate.is_file():
            return candidate
    return None


def read_text(path: Path, encoding: str = "utf-8", newline: str | None = None) -> str:
    """A local text file's content, decompressed where its name ends in .xz or .gz; a truncated or damaged
    compressed file is an error naming it."""
    opener = COMPRESSED.get(path.suffix)
    if opener is None:
        with open(path, encoding=encoding, newline=newline) as f:
            return f.read()
    try:
        with opener(path, "rt", encoding=encoding, newline=newline) as f:
            return f.read()
    except (EOFError, lzma.LZMAError, gzip.BadGzipFile) as e:
        raise ValueError(f"{path} cannot be decompressed ({e}): truncated or not a {path.suffix} file") from None


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Is the hub reachable? Asked once, quickly, so offline machines fall back at once."""
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(flag, "0") not in ("0", "", "false"):
            return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def resolve_source(what: str, *, setting: str, env: str, expects: str, configured: Optional[str],
                   local: Callable[[Path], T], hub: Optional[Callable[[], T]] = None, hub_id: str = "",
                   fallbacks: Sequence = (), usable: Callable[[Path], bool] = Path.exists,
                   configured_kind: str = "path") -> tuple[T, str]:
    """(data, where it came from).

    Args:
        what: what is loaded, for messages ("GLUE rte").
        setting / env: the config key and environment variable that point at a local copy.
        expects: what a local copy looks like, for messages.
        configured: the setting's value; when set it is used and nothing else is tried.
        local: reads a local copy. hub: reads from the hub (None: no hub source). hub_id: named in the result.
        fallbacks: local copies tried when the hub is unreachable; the first `usable` one is read.
        configured_kind: "folder" or "file" when `configured` must be one.
    """
    if configured:
        path = Path(configured).expanduser()
        kind_ok = {"folder": path.is_dir, "file": path.is_file}.get(configured_kind, path.exists)()
        if not kind_ok:
            raise FileNotFoundError(f"{setting}={configured} is not a {configured_kind} ({what}: {expects})")
        return local(path), str(path)
    if hub is not None and hub_reachable():
        return hub(), f"hub:{hub_id}"
    for candidate in fallbacks:
        path = Path(candidate).expanduser()
        if usable(path):
            return local(path), str(path.resolve())
    looked = ", ".join(map(str, fallbacks)) or "no fallback"
    reason = "the Hugging Face hub is unreachable and " if hub is not None else ""
    raise FileNotFoundError(f"{what}: {reason}no local copy was found (looked in {looked}). "
                            f"Set {setting}=/path or the {env} variable to {expects}.")


def local_or_hub(name: str, name_or_path: str, offline_default: str) -> str:
    """A model's name_or_path as a local folder when it is one, else as a hub id when the hub answers."""
    folder = Path(str(name_or_path)).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise ValueError(f"model {name!r}: {folder} is a file; model.name_or_path takes a model folder (what "
                             "save_pretrained writes) or a hub id")
        if not (folder / "config.json").is_file():
            found = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
            raise ValueError(f"model {name!r}: the folder {folder} has no config.json (it holds {found}); a Hugging "
                             "Face model folder holds config.json beside the weights, as save_pretrained writes it")
        return str(folder)
    if not hub_reachable():
        raise RuntimeError(
            f"model {name!r} ({name_or_path}) is neither a local folder nor reachable on the Hugging Face hub; "
            f"set model.name_or_path=/local/folder, or use the offline default model={offline_default}")
    return name_or_path
