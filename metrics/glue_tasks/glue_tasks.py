"""The suite's GLUE dev metrics (x100: accuracy, F1 for MRPC, Matthews for CoLA, Pearson/Spearman for STS-B) as an
`evaluate` metric that loads from this folder: evaluate.load("<checkout>/metrics/glue_tasks", "mrpc").

The hub's `glue` metric is the same arithmetic on a 0-1 scale but needs the hub to load; this one computes exactly
what the results JSONs hold (experiments/glue/metrics.py compute_metrics), from logits or regression outputs.
"""
import datasets
import evaluate
import numpy as np

from experiments.glue.metrics import compute_metrics
from experiments.glue.task import GlueTask
from experiments.shared.tasks import load_task

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: logits per example (classification) or one number (STS-B).
    references: labels (int) or scores (STS-B).
Returns:
    the task's metrics x100, as the results JSONs report them.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GlueTasks(evaluate.Metric):
    def _info(self):
        regression = glue_task(self.config_name).num_labels == 1
        value = datasets.Value("float32")
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": value if regression else datasets.Sequence(value),
                                        "references": value if regression else datasets.Value("int64")}))

    def _compute(self, predictions, references):
        return compute_metrics(glue_task(self.config_name), np.asarray(predictions), np.asarray(references))


def glue_task(name: str) -> GlueTask:
    """The GLUE task conf/task/<name>.yaml defines; another task (or family) is an error."""
    task = load_task(name)
    if not isinstance(task, GlueTask):
        raise KeyError(f"task {name!r} is not a GLUE task (conf/task/{name}.yaml defines a {type(task).__name__})")
    return task
