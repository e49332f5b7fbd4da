"""The one run skeleton every family shares: identity, lock, seed, method and backbone, the family's data and head,
the Trainer with resume, the family's evaluation, the adapter, and one typed result. Returns the run's SELECTION
metric (validation or dev, never test) to Hydra, negated when it is to be minimised: Hydra's sweepers maximise."""
from __future__ import annotations

import contextlib
import inspect
import logging
from typing import Optional

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import set_seed

from .shared.checkpoints import Checkpoints
from .shared.disk import OutOfSpace, no_space, out_of_space
from .shared.family import Family, RunLimits, Selection, TaskDefinition, Trained
from .shared.identity import RunIdentity
from .shared.lock import run_lock
from .shared.methods import adapt
from .shared.provenance import git_commit
from .shared.results import ResultStore, RunResult, environment, peak_memory_mb
from .shared.secrets import redact
from .shared.trainer import SETTINGS as TRAINER_SETTINGS
from .shared.trainer import RunConfig, TwoRateTrainer, training_arguments
from .shared.validate import int_at_least, settings_of, validate

log = logging.getLogger(__name__)


def task_definition(cfg: DictConfig) -> TaskDefinition:
    """The task's definition (conf/task/<name>.yaml, `definition:`), built and checked by its class."""
    if "definition" not in cfg.task:
        raise ValueError(f"task {cfg.task.get('name')!r} has no `definition:` naming its TaskDefinition class "
                         "(conf/task/<name>.yaml)")
    task = build(cfg.task.definition, "task")
    if not isinstance(task, TaskDefinition):
        raise TypeError(f"task.definition._target_ builds a {type(task).__name__}, not a TaskDefinition")
    return task


def build(node: DictConfig, group: str):
    """An object from its config (a task definition, a method, a model) with the class's own error rather than
    Hydra's wrapper; a setting the class does not take is named with those it does."""
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause):
            target = get_class(node._target_)
            accepted = [p for p in inspect.signature(target).parameters if p not in ("self", "args", "kwargs")]
            raise ValueError(f"{group}={node.get('name')} ({target.__name__}) takes no {str(cause).split()[-1]}: it "
                             f"takes {', '.join(accepted)}") from None
        raise (cause or e) from None


def build_family(cfg: DictConfig) -> Family:
    """The task's family, given its own config section, where the data lives, the run's limits and the sections it
    names (a family with an abstract method left fails here, before anything loads)."""
    task = task_definition(cfg)
    family = task.family_class()
    return family(task, cfg.task, cfg.data, RunLimits.of(cfg), **{name: cfg[name] for name in family.sections})


def check_settings(cfg: DictConfig, family: Family) -> None:
    """Every setting against the rules its owner declares: the method's class, the trainer, the family."""
    validate(cfg, {"": {"seed": int_at_least(0)}, "trainer": TRAINER_SETTINGS,
                   "method": settings_of(get_class(cfg.method._target_)), "task": settings_of(type(family))})


def run(cfg: DictConfig) -> float:
    family = build_family(cfg)
    check_settings(cfg, family)
    method = build(cfg.method, "method")  # an abstract method class fails here too, before anything loads
    identity = RunIdentity.of(cfg, family.name, family.task.name)
    commit = git_commit()  # the code this run started with, even if the tree changes while it runs
    if cfg.get("require_clean_tree") and (commit.endswith("-dirty") or commit == "unknown"):
        raise RuntimeError(f"require_clean_tree=true but the code is {commit}: commit your changes first, so that "
                           "these results name the code that made them")
    store = ResultStore(identity)
    stored = None if cfg.overwrite else store.read()
    if stored is not None and not family.unfinished(stored):
        log.info("already done: %s (overwrite=true to run again)", store.file)
        return objective(stored)
    family.check()
    if not identity.writer:  # rank 0 claims, tidies, finishes and writes; the others only train beside it
        nothing_to_train = stored is not None or (not cfg.overwrite and store.read_pending() is not None)
        return float("nan") if nothing_to_train else train_and_evaluate(cfg, family, method, identity, commit, None)
    # the checkpoint folder is locked too: two runs that share it (one checkpoint_dir, two results_dir) would resume
    # from each other's live checkpoints
    with run_lock(store.file.with_suffix(".lock"), str(store.file)), \
            run_lock(identity.checkpoints.with_name(identity.checkpoints.name + ".lock"), str(identity.checkpoints)), \
            results_disk(cfg, identity):
        store.remove_stale_temporaries()
        if stored is not None:  # finished, but this configuration takes it further (judging a judge=none run)
            result = family.finish(stored, identity.artifacts)
        else:
            result = store.read_pending() if not cfg.overwrite else None
            if result is None:
                result = train_and_evaluate(cfg, family, method, identity, commit, store)
            else:
                log.info("trained and evaluated already (%s): finishing only", store.pending_file)
            result = family.finish(result, identity.artifacts)
        store.write(result)
    log.info("%s %s %s %s seed %d: %s=%s -> %s", family.name, identity.model, identity.task, identity.method,
             identity.seed, result["selection"]["metric"], result["selection"]["value"], store.file)
    return objective(result)


@contextlib.contextmanager
def results_disk(cfg: DictConfig, identity: RunIdentity):
    """A full disk while the run writes its results (the adapter, predictions, the results file) names results_dir;
    one while it writes a checkpoint has named checkpoint_dir already (Checkpoints.train)."""
    try:
        yield
    except OutOfSpace:
        raise
    except Exception as e:
        if not out_of_space(e):
            raise
        raise no_space("results_dir", cfg.results_dir, f"the run's results ({identity.artifacts}*)",
                       "Results are written whole or not at all; a rerun picks up where this one stopped (its last "
                       "checkpoint, or its evaluated result)") from e


def composed_from() -> Optional[dict]:
    """The config groups Hydra's app composed this run from (experiment=, method=, ...; Hydra's own groups left out),
    or None where the config was composed some other way (the compose API)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    choices = HydraConfig.get().runtime.choices
    return {group: choice for group, choice in choices.items() if not group.startswith("hydra")}


def objective(result: dict) -> float:
    """What Hydra maximises for a stored result: its selection value, negated for a loss; NaN where none was made."""
    selection = result["selection"]
    value = selection["value"]
    return float("nan") if value is None else Selection(selection["metric"], selection["split"],
                                                         selection["mode"]).objective(value)


def train_and_evaluate(cfg: DictConfig, family: Family, method, identity: RunIdentity, commit: str, store):
    """Train and evaluate; the result as a dict, stored as pending by the writer (`store`), or NaN on other ranks."""
    checkpoints = Checkpoints(identity.checkpoints, tidy=identity.writer, checkpoint_dir=identity.checkpoint_dir)
    if cfg.overwrite:
        checkpoints.remove()  # overwrite means train again, not resume
    else:
        checkpoints.read_earlier_time()
    set_seed(cfg.seed)
    backbone = build(cfg.model, "model")
    backbone.check()  # a backbone that cannot be had (offline, no local copy) stops here, before any data loads
    family.check_backbone(backbone)  # and one of the wrong kind for the task (an image model on GLUE)
    data, source = family.load_data()
    model, processor = family.load_model(backbone, data)
    model_class = type(model).__name__  # what was loaded, before a method wraps it
    backbone.resolve(model)
    model, counts = adapt(model, method, backbone)
    log.info("%s on %s/%s: trainable %d of %d", method.name, backbone.name, identity.task, counts.trainable,
             counts.total)
    prepared = family.prepare(data, model, processor)
    trainer = TwoRateTrainer(
        model=model, args=training_arguments(cfg, identity, method, **prepared.training_args),
        train_dataset=prepared.train, eval_dataset=prepared.eval, method=method, head=backbone.head,
        data_collator=prepared.collator, compute_metrics=prepared.compute_metrics)
    if "wandb" in list(cfg.logger.get("report_to") or []):
        trainer.add_callback(RunConfig({**redact(OmegaConf.to_container(cfg, resolve=True)),
                                        "config_id": identity.config_id}))
    checkpoints.train(trainer, identity.world_size, method.lr)
    collective = family.evaluate_on_every_rank(trainer, prepared)
    if not identity.writer:
        return float("nan")  # several processes: rank 0 evaluates and writes
    outcome = family.evaluate(Trained(trainer, model, processor, data, prepared, collective), identity.artifacts)
    adapter_bytes = method.save(model, identity.artifacts / "adapter") if cfg.save_adapter else None
    result = RunResult(
        family=family.name, task=identity.task, model=identity.model, method=identity.method,
        variant=counts.variant, seed=identity.seed, config_id=identity.config_id,
        trainable_params=counts.trainable, head_params=counts.head, total_params=counts.total,
        adapter_bytes=adapter_bytes, selection=family.selection.as_dict(outcome.selection_value),
        report=family.report.as_dict(family.task.display_name), world_size=identity.world_size,
        effective_batch_size=cfg.trainer.batch_size * cfg.trainer.grad_accum * identity.world_size,
        wall_time_s=checkpoints.elapsed(), peak_memory=peak_memory_mb(), git_commit=commit,
        git_dirty=commit.endswith("-dirty"), **environment(), config=redact(OmegaConf.to_container(cfg, resolve=True)),
        composed_from=composed_from(),
        outcome={**outcome.fields, **prepared.counts, "data_source": source, "model_class": model_class,
                 "target_modules": backbone.target_modules}).to_json()
    store.write_pending(result)
    if not cfg.trainer.keep_checkpoints:
        checkpoints.remove()
    return result
