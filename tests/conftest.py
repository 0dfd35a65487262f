import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# Isolate every test from the user's machine: models converted or pretrained by a test
# go to a throw-away cache (a regression that pretrained into ~/.cache would otherwise
# pass silently and slowly), and nothing may reach a model hub.
_CACHE = tempfile.mkdtemp(prefix="ensemble-test-cache-")
os.environ["ENSEMBLE_CACHE"] = _CACHE
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# CI always has ../shared/data; there a missing folder is a broken path, not a user's
# clone without the data, so .ci/run sets this and the data tests fail instead of skipping.
REQUIRE_DATA = os.environ.get("ENSEMBLE_REQUIRE_SHARED_DATA") == "1"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        if REQUIRE_DATA:
            pytest.fail(f"{SHARED_DATA} not found, and ENSEMBLE_REQUIRE_SHARED_DATA=1 says it "
                        "must be there")
        pytest.skip(f"{SHARED_DATA} not found (the shared data sets sit beside the checkout)")
    return SHARED_DATA

