"""Shared fixtures: small real Hugging Face checkpoints built locally, and a fresh catalog."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def tiny_vit(seed: int = 0):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, num_labels=10)
    return ViTForImageClassification(cfg).eval()


@pytest.fixture
def llama_dir(tmp_path: Path) -> Path:
    path = tmp_path / "llama-tiny"
    tiny_llama().save_pretrained(path)
    return path


@pytest.fixture
def llama_sharded_dir(tmp_path: Path) -> Path:
    path = tmp_path / "llama-sharded"
    tiny_llama(1).save_pretrained(path, max_shard_size="20KB")
    return path


@pytest.fixture
def vit_dir(tmp_path: Path) -> Path:
    path = tmp_path / "vit-tiny"
    tiny_vit().save_pretrained(path)
    return path


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


@pytest.fixture
def catalog(tmp_path: Path):
    from zoo import Catalog

    return Catalog(tmp_path / "catalog.db", store=tmp_path / "store")


HUB_TOKEN = "hf_weightzoo_secret_token_123"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A local Hub-compatible server (tests/hub_server.py) that huggingface-hub talks to,
    with a token and a private HF_HOME, online for this test only."""
    import huggingface_hub.constants as hc
    from hub_server import HubServer

    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
        yield server


def perturbed_copy(src: Path, dst: Path, delta: float = 0.01) -> Path:
    """A 'fine-tune' of a checkpoint: same config, every float tensor shifted."""
    from zoo import Checkpoint, save_tensors

    ckpt = Checkpoint.open(src)
    tensors = {n: ckpt.get(n).clone() + delta for n in ckpt.names()}
    save_tensors(dst, tensors, config=ckpt.config)
    return dst
