"""Shared fixtures: small real Hugging Face checkpoints built locally, a fresh catalog, the
`zoo` command in process, and a local Hub server. Helpers that are not fixtures live in
the `tests.helpers` package."""
from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def pytest_collection_finish(session) -> None:
    """What collection imported (torch, transformers, scikit-learn: millions of objects)
    lives to the end: frozen out of the cyclic GC, whose every full collection would walk
    it again."""
    gc.freeze()


def pytest_sessionfinish(session) -> None:
    """One full collection (finalizers that raise are still reported), then everything is
    frozen: pytest runs five more at the very end (~0.4 s each here, for nothing)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def _one_intra_op_thread() -> None:
    """The test models are tiny and launch-bound: one intra-op thread is faster, does not
    spin-wait against other processes, and makes float results independent of the core
    count. Set in the processes that run tests (torch is not imported at conftest load, so
    pytest-xdist's controller starts without it)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def _llama_template(tmp_path_factory) -> Path:
    """The tiny Llama saved once per session; each test gets its own copy (copying the folder
    is ~60x cheaper than building and saving the model again)."""
    from tests.helpers.models import tiny_llama

    path = tmp_path_factory.mktemp("template") / "llama-tiny"
    tiny_llama().save_pretrained(path)
    return path


@pytest.fixture
def llama_dir(tmp_path: Path, _llama_template: Path) -> Path:
    path = tmp_path / "llama-tiny"
    shutil.copytree(_llama_template, path)
    return path


@pytest.fixture
def llama_sharded_dir(tmp_path: Path) -> Path:
    path = tmp_path / "llama-sharded"
    from tests.helpers.models import tiny_llama

    tiny_llama(1).save_pretrained(path, max_shard_size="20KB")
    return path


@pytest.fixture
def vit_dir(tmp_path: Path) -> Path:
    path = tmp_path / "vit-tiny"
    from tests.helpers.models import tiny_vit

    tiny_vit().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def moe_models(tmp_path_factory) -> dict[str, str]:
    """Paths of tiny dense models for mixtures of experts (tests/helpers/moe.py): a base Llama
    with a trained tokenizer, two fine-tunes of it, a wider Llama, a GPT-2, a Llama without
    a tokenizer."""
    from tests.helpers.moe import build_moe_models

    return build_moe_models(tmp_path_factory.mktemp("moe-models"))


@pytest.fixture
def run(tmp_path, capsys, monkeypatch):
    """The `zoo` command in process: run(*args) -> (exit code, stdout, stderr)."""
    from zoo.cli import main

    monkeypatch.setenv("ZOO_CATALOG", str(tmp_path / "cli.db"))
    monkeypatch.setenv("ZOO_STORE", str(tmp_path / "store"))

    def _run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return _run


@pytest.fixture(scope="session")
def _catalog_template(tmp_path_factory) -> Path:
    """An empty catalog made once per session; each test opens its own copy (creating the
    schema is most of the cost of a new catalog)."""
    from zoo import Catalog

    path = tmp_path_factory.mktemp("template") / "catalog.db"
    Catalog(path).engine.dispose()
    return path


@pytest.fixture
def catalog(tmp_path: Path, _catalog_template: Path):
    from zoo import Catalog

    shutil.copyfile(_catalog_template, tmp_path / "catalog.db")
    return Catalog(tmp_path / "catalog.db", store=tmp_path / "store")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A local Hub-compatible server (tests/hub_server.py) that huggingface-hub talks to,
    with a token and a private HF_HOME, online for this test only."""
    import huggingface_hub.constants as hc
    from tests.helpers.hub_server import HubServer
    from tests.helpers.models import HUB_TOKEN

    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
        yield server


@pytest.fixture(scope="session")
def tui_zoo(tmp_path_factory) -> Path:
    """The TUI tests' small deterministic catalog (tests/helpers/tui_zoo.py), built once."""
    from tests.helpers.tui_zoo import build_tui_zoo

    return build_tui_zoo(tmp_path_factory.mktemp("tui-zoo"))


@pytest.fixture
def tui_app(tui_zoo, tmp_path, monkeypatch):
    """A ZooApp on a private copy of `tui_zoo` (actions may change it); `app.notes` records
    every notification as (message, severity)."""
    from tests.helpers.tui_zoo import make_app

    monkeypatch.delenv("NO_COLOR", raising=False)  # screenshots are in colour
    return make_app(tui_zoo, tmp_path)
