import pathlib

import pytest

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference"
FIXTURES = SHARED / "fixtures"

@pytest.fixture
def reference_dir():
    if not REFERENCE.is_dir():
        pytest.skip(f"parity vectors not found at {REFERENCE} (they live in the team's ../shared checkout)")
    return REFERENCE

@pytest.fixture
def fixtures_dir():
    if not FIXTURES.is_dir():
        pytest.skip(f"speech fixtures not found at {FIXTURES} (they live in the team's ../shared checkout)")
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_tts_dir(tmp_path_factory):
    """A tiny random-weight TTS model folder (codec + tokenizer, LM + text tokenizer, flow), built once."""
    from tiny_models import build_tiny_tts

    return build_tiny_tts(tmp_path_factory.mktemp("tiny_tts"))
