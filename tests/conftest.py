import os
import sys
from pathlib import Path

import pytest

# the model builders in helpers.py are shared by tests in every folder
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import no_posix  # noqa: E402

# before any test module imports the package: see no_posix.py
_STRIPPED = no_posix.strip() if no_posix.requested() else []

from helpers import minilm_dir, save_text_pair, text_encoder, vocab_size  # noqa: E402  (after the strip, as test modules)


def pytest_report_header(config):
    if no_posix.requested():
        return f"olive-bf16: POSIX-only os functions removed: {', '.join(_STRIPPED) or 'none were present'}"
    return None


# --------------------------------------------------------------------------- text models (evaluation, olive)


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    return minilm_dir()


@pytest.fixture
def encoder_pair(tmp_path, tokenizer_dir):
    """(fp32 path, bf16 path) of the tiny encoder, dynamic shapes."""
    return save_text_pair(tmp_path, text_encoder(vocab_size(tokenizer_dir)))


@pytest.fixture
def static_encoder_pair(tmp_path, tokenizer_dir):
    """(fp32 path, bf16 path) of the tiny encoder with batch 1 and sequence 32 fixed."""
    return save_text_pair(tmp_path, text_encoder(vocab_size(tokenizer_dir), seq=32, batch=1))


@pytest.fixture
def reranker_pair(tmp_path, tokenizer_dir):
    """(fp32 path, bf16 path) of the tiny cross-encoder (logits [batch, 1])."""
    return save_text_pair(tmp_path, text_encoder(vocab_size(tokenizer_dir), reranker=True))
