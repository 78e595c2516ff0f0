import os

import pytest

# Tests run on the CPU with a fixed thread count so results do not depend on the machine's core count.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def fixtures_dir():
    from fixture_sets import fixtures_root

    return fixtures_root()
