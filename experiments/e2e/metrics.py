"""E2E scores, each from a well-kept library, over predictions grouped by meaning representation.

BLEU: sacrebleu (all references of an MR); NIST: nltk corpus_nist; METEOR: nltk meteor_score (WordNet);
ROUGE-L: rouge-score, best reference per MR, averaged; CIDEr: pycocoevalcap. BLEU/METEOR/ROUGE-L x100 as
in the paper's tables; NIST and CIDEr raw.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path


def group_references(mrs: list[str], refs: list[str]) -> OrderedDict[str, list[str]]:
    grouped: OrderedDict[str, list[str]] = OrderedDict()
    for mr, ref in zip(mrs, refs):
        grouped.setdefault(mr, []).append(ref)
    return grouped


def ensure_wordnet() -> None:
    """nltk needs WordNet for METEOR: the downloader where the network allows, else Debian's files
    (copied into $NLTK_DATA by `make wordnet`)."""
    import nltk

    try:
        nltk.corpus.wordnet.ensure_loaded()
        return
    except LookupError:
        pass
    debian = Path("/usr/share/wordnet")
    if debian.is_dir():
        target = Path(os.environ.get("NLTK_DATA", Path.home() / "nltk_data")) / "corpora" / "wordnet"
        raise LookupError(f"WordNet for METEOR: run `make wordnet` (copies {debian} into {target} and adds lexnames)")
    if not nltk.download("wordnet", quiet=True):
        raise LookupError("METEOR needs WordNet: `make wordnet` (Debian wordnet-base) or nltk.download('wordnet')")


def e2e_scores(predictions: list[str], references: list[list[str]]) -> dict:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference groups")
    import sacrebleu
    from nltk.translate.meteor_score import meteor_score
    from nltk.translate.nist_score import corpus_nist
    from pycocoevalcap.cider.cider import Cider
    from rouge_score import rouge_scorer

    most = max(len(r) for r in references)
    streams = [[r[i] if i < len(r) else None for r in references] for i in range(most)]
    bleu = sacrebleu.corpus_bleu(predictions, streams).score
    tok_preds = [p.lower().split() for p in predictions]
    tok_refs = [[r.lower().split() for r in refs] for refs in references]
    nist = corpus_nist(tok_refs, tok_preds, n=5)
    ensure_wordnet()
    meteor = sum(meteor_score(r, p) for r, p in zip(tok_refs, tok_preds)) / len(predictions)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge_l = sum(max(scorer.score(r, p)["rougeL"].fmeasure for r in refs)
                  for p, refs in zip(predictions, references)) / len(predictions)
    cider, _ = Cider().compute_score({i: [" ".join(r) for r in refs] for i, refs in enumerate(tok_refs)},
                                     {i: [" ".join(p)] for i, p in enumerate(tok_preds)})
    return {"bleu": bleu, "nist": nist, "meteor": 100 * meteor, "rouge_l": 100 * rouge_l, "cider": float(cider)}
