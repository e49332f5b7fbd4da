"""E2E NLG Challenge scores (BLEU, NIST, METEOR, ROUGE-L, CIDEr) equal to the official measure_scores.py, as an
`evaluate` metric that loads from this folder: evaluate.load("<checkout>/metrics/e2e_nlg").

The hub's metric scripts are not used: they need the hub to load, and none computes the E2E scorer's numbers (its
NIST brevity penalty, METEOR 1.5 with paraphrases, coco-caption's PTB tokenisation, ROUGE-L and CIDEr-D).
The computation lives in experiments/e2e/metrics.py; Java is needed for METEOR and the PTB tokenizer.
"""
import datasets
import evaluate

from experiments.e2e.metrics import e2e_scores

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: one system output per instance (str).
    references: the references of each instance (list of str).
Returns:
    bleu, meteor, rouge_l (x100), nist, cider.
Example:
    >>> e2e = evaluate.load("metrics/e2e_nlg")
    >>> e2e.compute(predictions=["The Eagle is a pub."], references=[["The Eagle is a pub.", "A pub, The Eagle."]])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class E2eNlg(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
            reference_urls=["https://github.com/tuetschek/e2e-metrics"])

    def _compute(self, predictions, references):
        return e2e_scores(list(predictions), [list(r) for r in references])
