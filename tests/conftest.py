"""Fixtures; the helpers they use live in helpers.py. With FOURIERFT_NO_SKIPS=1 (CI sets it) a skipped test fails
the run: every test is meant to run on a clone with nothing beside it, so a skip means something is missing."""
import os

import pytest

from helpers import FAST, GENERATION_RUN, GLUE_RUN, compose_config, local_data, tiny_llama_folder


@pytest.fixture
def fast_config(tmp_path):
    """compose(*overrides) with FAST settings, local data, and results/checkpoints under tmp_path."""
    def make(*overrides):
        return compose_config(*FAST, *local_data(tmp_path), *overrides)
    return make


@pytest.fixture
def generation_config(fast_config):
    """fast_config for the decoder families: longer sequences, no checkpoints."""
    return lambda *overrides: fast_config(*GENERATION_RUN, *overrides)


@pytest.fixture
def glue_config(fast_config):
    """fast_config for GLUE on a tiny BERT, two epochs."""
    return lambda *overrides: fast_config(*GLUE_RUN, *overrides)


@pytest.fixture
def base_folder(tmp_path):
    """A tiny LLaMA checkpoint folder (GQA, tied embeddings) with the GPT-2 tokenizer, for 4-bit loading."""
    return tiny_llama_folder(tmp_path / "tiny-llama")


SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        SKIPPED.append(f"{report.nodeid}: {reason}")


pytest_collectreport = pytest_runtest_logreport  # a whole module skipped (importorskip at its top)


def pytest_terminal_summary(terminalreporter):
    if os.environ.get("FOURIERFT_NO_SKIPS") and SKIPPED:
        terminalreporter.write_line(f"FOURIERFT_NO_SKIPS: {len(SKIPPED)} test(s) skipped, which fails this run:", red=True)
        for line in SKIPPED:
            terminalreporter.write_line(f"  {line}", red=True)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("FOURIERFT_NO_SKIPS") and SKIPPED and exitstatus == 0:
        session.exitstatus = 1
