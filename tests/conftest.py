"""Fixtures; the helpers they use live in helpers.py."""
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
