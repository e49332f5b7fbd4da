"""The presets, written as the papers print them: one hyperparameter table per backbone (conf/tables/), whose rows
Hydra's ConfigStore serves as `experiment=<table>/<row>` with `preset=<table>/<row>/<method>` chosen by method=.

A table file holds, each level merging over the one above (later wins, as Hydra merges):
    groups:   config group choices its experiments make (model: roberta_base, judge: openai, ...)
    values:   settings every experiment of the table shares (trainer: {...}, task: {...})
    <method>: settings every experiment shares when run with that method (fourierft: {method: {n: 1000}})
    models:   optional [vit_base, vit_large]: each row once per model (experiment=<table>/<model>/<row>)
    rows:     <row>: {groups, values, <method>} for one experiment (a task, or a model), only what differs
A run composes the result exactly as it composed the YAML files it replaces (`--cfg job` prints a run's values, and
the config id of every committed result stays what it was)."""
from __future__ import annotations

from functools import cache
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
TABLES = CONF / "tables"
LEVEL_KEYS = ("groups", "values")


@cache
def methods() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in (CONF / "method").glob("*.yaml")))


def merged(base: dict, over: dict) -> dict:
    """`over` on a copy of `base`: nested dicts merged key by key, anything else (a list, null) replaced, as Hydra
    merges configs. Plain dicts: every process that imports the suite reads the tables, and OmegaConf's merge cost
    half a second of that start-up."""
    out = {key: merged(value, {}) if isinstance(value, dict) else value for key, value in base.items()}
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _level(table: Path, where: str, node: dict, extra: tuple = ()) -> dict:
    """One level's groups, values and per-method settings; a key that is none of them (a method's name mistyped) is
    an error naming the file."""
    known = methods()
    unknown = sorted(k for k in node if k not in (*LEVEL_KEYS, *extra, *known))
    if unknown:
        raise ValueError(f"{table}: {where} has {', '.join(unknown)}, which is not a method ({', '.join(known)}) "
                         f"nor one of {', '.join((*LEVEL_KEYS, *extra))}")
    return {k: node.get(k) or {} for k in (*LEVEL_KEYS, *known)}


@cache
def presets() -> dict:
    return read_tables(TABLES)


def read_tables(folder: Path) -> dict:
    """{experiment name: (defaults list, values, {method: values}, the table file)} from every table under
    `folder`."""
    found = {}
    for table in sorted(folder.rglob("*.yaml")):
        prefix = str(table.relative_to(folder).with_suffix(""))
        content = OmegaConf.to_container(OmegaConf.load(table))  # its YAML reader: 1e-1 is a number
        top = _level(table, "the table", content, extra=("models", "rows"))
        if not content.get("rows"):
            raise ValueError(f"{table} has no rows")
        for model in content.get("models") or [None]:
            for row, node in content["rows"].items():
                level = _level(table, f"row {row}", node or {})
                name = "/".join(p for p in (prefix, model, str(row)) if p)
                groups = {**top["groups"], **({"model": model} if model else {}), **level["groups"]}
                values = merged(top["values"], level["values"])
                per_method = {m: merged(top[m], level[m]) for m in methods()}
                found[name] = ([{f"override /{g}": choice} for g, choice in groups.items()], values,
                               {m: v for m, v in per_method.items() if v}, table)
    return found


def experiment_names() -> list[str]:
    return sorted(presets())


def register() -> None:
    """Every row as Hydra's experiment/<name> and each of its methods as preset/<name>/<method> (global package, as
    the YAML presets were)."""
    store = ConfigStore.instance()
    for name, (defaults, values, per_method, _) in presets().items():
        group, _, leaf = f"experiment/{name}".rpartition("/")
        store.store(group=group, name=leaf, node={"defaults": defaults, **values}, package="_global_",
                    provider="fourierft")
        for method, settings in per_method.items():
            store.store(group=f"preset/{name}", name=method, node=settings, package="_global_",
                        provider="fourierft")


def experiment_yaml(name: str, method: str) -> str:
    """Preset `name` run with `method` as a plain Hydra experiment file (conf/experiment/<file>.yaml): its config
    group choices as defaults overrides, the table's values for the row and the method merged as Hydra merges
    them. `experiment=<file>` composes to the same config id as `experiment=<name> method=<method>`."""
    found = presets()
    if name not in found:
        raise SystemExit(f"unknown preset {name!r}; `fourierft-presets list` lists them")
    if method not in methods():
        raise SystemExit(f"unknown method {method!r} (accepted: {', '.join(methods())})")
    defaults, values, per_method, table = found[name]
    body = {"defaults": [*defaults, {"override /method": method}], **merged(values, per_method.get(method, {}))}
    header = (f"# @package _global_\n# experiment={name} method={method}, from {table.relative_to(CONF.parent)} "
              "(fourierft-presets cp). Edit freely;\n# run it as experiment=<this file's name> when it lies in "
              "conf/experiment/ (or a folder on hydra.searchpath).\n")
    return header + OmegaConf.to_yaml(OmegaConf.create(body))


def main(argv=None) -> int:
    """`fourierft-presets`: list the presets, show one as an experiment file, or copy it into one to edit."""
    import argparse

    parser = argparse.ArgumentParser(prog="fourierft-presets", description=main.__doc__.split(":", 1)[1].strip())
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every preset name (experiment=<name>)")
    for command, text in (("show", "print a preset as the experiment file it composes to"),
                          ("cp", "write a preset as an experiment file you can edit (as torchtune's tune cp)")):
        sub = commands.add_parser(command, help=text)
        sub.add_argument("name", help="a preset, e.g. glue/roberta_base/mrpc")
        sub.add_argument("--method", default="fourierft", help="the method whose column to take (default fourierft)")
        if command == "cp":
            sub.add_argument("destination", type=Path, help="the file to write, e.g. conf/experiment/my_mrpc.yaml")
            sub.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(experiment_names()))
        return 0
    text = experiment_yaml(args.name, args.method)
    if args.command == "show":
        print(text, end="")
        return 0
    destination = args.destination if args.destination.suffix == ".yaml" else args.destination.with_suffix(".yaml")
    if destination.exists() and not args.force:
        raise SystemExit(f"{destination} exists: --force replaces it")
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(text)
    print(f"wrote {destination}: run it as experiment={destination.stem}" if destination.parent.name == "experiment"
          else f"wrote {destination}")
    return 0
