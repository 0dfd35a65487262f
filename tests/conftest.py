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



# The digit model and its pool, for the training tests (test_train, test_population):
# built once per session, not once per file.
@pytest.fixture(scope="session")
def digit_base(tmp_path_factory) -> Path:
    from tests.train_helpers import build_digit_model

    return build_digit_model(tmp_path_factory.mktemp("digit") / "base")


@pytest.fixture(scope="session")
def zero_pool(tmp_path_factory) -> Path:
    from tests.train_helpers import write_zero_pool

    return write_zero_pool(tmp_path_factory.mktemp("pool") / "pool.jsonl", n=24)
