"""Hub push/pull against a Hub-compatible server started on 127.0.0.1: round trips with
identical tensors and lineage, verified checksums, no duplicates, nothing registered on
failure, tokens never shown or stored."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zoo import Catalog, Parent
from zoo.errors import ZooError

from tests.helpers.models import HUB_TOKEN as TOKEN
from tests.helpers.models import perturbed_copy

pytestmark = pytest.mark.slow  # starts a local Hub server per test


@pytest.fixture
def source(tmp_path, llama_dir):
    cat = Catalog(tmp_path / "a.db", store=tmp_path / "store-a")
    base = cat.add(llama_dir, name="base").entry
    ft_dir = perturbed_copy(llama_dir, tmp_path / "ft")
    ft = cat.add(ft_dir, name="ft", parents=[Parent(base.ref, "base")]).entry
    return cat, base, ft


def fresh(tmp_path, name="b") -> Catalog:
    return Catalog(tmp_path / f"{name}.db", store=tmp_path / f"store-{name}")


def tensors_equal(a, b) -> bool:
    return a.names() == b.names() and all(torch.equal(a.get(n), b.get(n)) for n in a.names())


def test_push_pull_round_trip_with_lineage(hub, tmp_path, source):
    from zoo.hub import pull, push

    cat, base, ft = source
    pb = push(cat, base.ref, "me/base")
    pf = push(cat, ft.ref, "me/ft", message="fine-tune")
    assert cat.get(ft.ref).card["hub_pushes"][-1] == {"repo_id": "me/ft", "commit": pf.commit, "revision": "main",
                                                      "digest": ft.digest, "url": pf.url}
    card = hub.state.repos["me/ft"].commits[pf.commit]["README.md"].decode()
    assert "base_model:\n- me/base" in card and "weightzoo" in card and base.digest in card
    assert "library_name: transformers" in card and "base_model_relation: finetune" in card
    assert set(a for a in hub.state.auth if a) == {f"Bearer {TOKEN}"}  # the token went only in the header

    other = fresh(tmp_path)
    b = pull(other, "me/base")
    f = pull(other, f"me/ft@{pf.commit}")
    assert b.created and f.created and f.commit == pf.commit == f.entry.location.split("@")[1]
    assert f.entry.location == f"hub:me/ft@{pf.commit}" and pb.commit in b.entry.location
    assert tensors_equal(cat.open(ft.ref), other.open(f.entry.ref))
    parents = other.show(f.entry.ref)["parents"]
    assert [(p["parent"], p["role"]) for p in parents] == [(b.entry.ref, "base")]
    again = pull(other, f"me/ft@{pf.commit}")  # the same commit twice: no duplicate
    assert not again.created and again.entry.id == f.entry.id and len(other.ls()) == 2
    db = (tmp_path / "b.db").read_bytes() + (tmp_path / "a.db").read_bytes()
    assert TOKEN.encode() not in db


def test_pull_into_the_pushing_catalog_links_by_digest(hub, tmp_path, source):
    from zoo.hub import pull, push

    cat, base, ft = source
    push(cat, ft.ref, "me/ft")
    other = fresh(tmp_path)
    other.add(cat.get(base.ref).path, name="local-base")  # same bytes as the parent
    f = pull(other, "me/ft")
    assert [p["parent"] for p in other.show(f.entry.ref)["parents"]] == ["local-base@1"]


def _store_left(cat: Catalog) -> list[Path]:
    return [p for p in Path(cat.store).rglob("*") if p.is_file()] if Path(cat.store).exists() else []


def test_tampered_file_is_refused(hub, tmp_path, source):
    from zoo.hub import pull, push

    cat, base, _ = source
    push(cat, base.ref, "me/base")
    hub.state.tamper["model.safetensors"] = b"x" * 100
    other = fresh(tmp_path)
    with pytest.raises(ZooError, match="does not match"):
        pull(other, "me/base")
    assert other.ls() == [] and _store_left(other) == []


@pytest.mark.slow
def test_network_error_mid_download_registers_nothing(hub, tmp_path, source, capfd):
    from zoo.hub import pull, push

    cat, base, _ = source
    r = push(cat, base.ref, "me/base")
    hub.state.cut.add("model.safetensors")
    other = fresh(tmp_path)
    capfd.readouterr()
    with pytest.raises(ZooError, match="pull me/base") as info:
        pull(other, "me/base")
    assert f"{hub.url}/me/base/resolve/{r.commit}/model.safetensors" in str(info.value)  # names the URL
    assert "\n" not in str(info.value) and "check the connection" in str(info.value)
    assert "resume" not in capfd.readouterr().err  # huggingface-hub's retry lines are kept quiet
    assert other.ls() == [] and _store_left(other) == []


@pytest.mark.slow
def test_cut_download_is_one_line_on_the_command_line(hub, run, llama_dir):
    assert run("add", str(llama_dir), "--name", "m")[0] == 0
    assert run("push", "m", "me/m")[0] == 0
    hub.state.cut.add("model.safetensors")
    code, _, err = run("pull", "me/m", "--name", "again")
    lines = [ln for ln in err.splitlines() if ln.strip() and "%" not in ln]  # progress bars aside
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: pull me/m: downloading ")
    assert "/me/m/resolve/" in lines[0] and "internal error" not in lines[0]


def test_disk_full_during_pull_is_one_line(hub, tmp_path, source, monkeypatch):
    import errno
    import os

    import huggingface_hub.file_download as fd

    from zoo.hub import pull, push

    cat, base, _ = source
    push(cat, base.ref, "me/base")

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fd, "http_get", full)
    other = fresh(tmp_path)
    with pytest.raises(ZooError, match="no space left") as info:
        pull(other, "me/base")
    assert "\n" not in str(info.value) and "pull me/base" in str(info.value)
    assert other.ls() == [] and _store_left(other) == []


def test_escaping_remote_path_is_refused(hub, tmp_path, source):
    from zoo.hub import pull, push

    cat, base, _ = source
    r = push(cat, base.ref, "me/base")
    hub.state.repos["me/base"].commits[r.commit]["../evil.txt"] = b"boom"
    other = fresh(tmp_path)
    with pytest.raises(ZooError, match="escape"):
        pull(other, "me/base")
    assert other.ls() == [] and not (tmp_path / "evil.txt").exists()


def test_unknown_repo_and_bad_spec(hub, tmp_path):
    from zoo.hub import pull

    with pytest.raises(ZooError, match="repository not found"):
        pull(fresh(tmp_path), "me/nothing")
    with pytest.raises(ZooError, match="org/name"):
        pull(fresh(tmp_path), "no-slash")


def test_push_pull_commands(hub, run, llama_dir, tmp_path):
    assert run("add", str(llama_dir), "--name", "m")[0] == 0
    code, out, err = run("push", "m", "me/m", "--revision", "dev", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert TOKEN not in out + err and len(info["commit"]) == 40
    assert hub.state.repos["me/m"].branches["dev"] == info["commit"]
    code, out, err = run("pull", f"me/m@{info['commit']}", "--name", "m-pulled", "--json")
    pulled = json.loads(out)
    assert code == 0 and pulled["location"] == f"hub:me/m@{info['commit']}" and pulled["created"]
    code, out, _ = run("pull", "me/m@dev")
    assert code == 0 and "already in the catalog" in out
    code, _, err = run("pull", "me/missing")
    assert code != 0 and err.count("\n") == 1 and TOKEN not in err
