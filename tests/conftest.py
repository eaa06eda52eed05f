"""Session-wide test settings: the user cache (``$XDG_CACHE_HOME``: auto's measured placement, TensorRT engines of
read-only bundles) points at one temporary folder, so tests never read or write the real one, and ``auto``
measures each bundle's placement once per session, not on every load."""
import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_cache_home(tmp_path_factory):
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old
