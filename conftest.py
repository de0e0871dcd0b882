"""Repository-wide pytest configuration (the unit tests' fixtures live in tests/conftest.py)."""


def pytest_collectstart(collector):
    # nbval compares stderr too, and warnings there carry /tmp/ipykernel_<pid> paths: never compare it.
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr",)
