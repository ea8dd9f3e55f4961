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
