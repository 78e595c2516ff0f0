import os
from collections.abc import Iterator

import pytest

# Tests run on the CPU with a fixed thread count so results do not depend on the machine's core count.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def fixtures_dir():
    from fixture_sets import fixtures_root

    return fixtures_root()


@pytest.fixture(autouse=True)
def zoo_restored() -> Iterator[None]:
    """Leave the process's model registry as the test found it (the service registers the tiny model)."""
    from zoo_state import zoo_kept

    with zoo_kept():
        yield


@pytest.fixture(autouse=True, scope="module")
def zoo_restored_after_module() -> Iterator[None]:
    """The same around each module: its module-scoped fixtures may start a service in this process."""
    from zoo_state import zoo_kept

    with zoo_kept():
        yield


@pytest.fixture(autouse=True)
def redis_clients_closed() -> Iterator[None]:
    """Close the Redis clients a test made through ``service_helpers.redis_client``."""
    import service_helpers

    before = service_helpers.clients_made()
    yield
    service_helpers.close_clients(before)
