"""Hugging Face Hub push and pull, with provenance.

Push uploads a model's files and a model card whose front matter carries `base_model`
(the parents' Hub ids where known), `base_model_relation`, tags and the weightzoo recipe
(operator, params, input digests), and records the repo and commit on the entry. Pull
downloads a revision, checks every file against the sha256 the Hub reports (or its git
blob id), registers it as `hub:REPO@COMMIT` and rebuilds its lineage from the card where
the parents are in this catalog. Tokens come from huggingface-hub's usual places
(`HF_TOKEN`, the login cache) and are never printed or stored; `HF_ENDPOINT` is honoured.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from .card import front_matter, hub_id, model_card, read_card_recipe
from .catalog import Catalog, ModelEntry, Parent
from .errors import ZooError
from .families import hub_library
from .writer import disk_full


@dataclass
class PushResult:
    repo_id: str
    commit: str
    url: str
    files: int


@dataclass
class PullResult:
    entry: ModelEntry
    created: bool
    commit: str


def _api(token: str | None = None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)


def _hub_errors(action: str):
    """Turn huggingface-hub and network errors into one line (never echoing headers/tokens)."""
    from contextlib import contextmanager

    @contextmanager
    def guard():
        try:
            yield
        except ZooError:
            raise
        except Exception as e:  # noqa: BLE001 - hub client and transport errors vary by version
            from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

            full = disk_full(e, e.filename or "the download folder") if isinstance(e, OSError) else None
            if full is not None:
                raise ZooError(f"{action}: {full}") from None

            if isinstance(e, RepositoryNotFoundError):
                raise ZooError(f"{action}: repository not found (or no access with the current token)") from None
            if isinstance(e, RevisionNotFoundError):
                raise ZooError(f"{action}: revision not found") from None
            if isinstance(e, HfHubHTTPError):
                status = getattr(getattr(e, "response", None), "status_code", "?")
                raise ZooError(f"{action}: the Hub answered HTTP {status}") from None
            raise ZooError(f"{action}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'network error'}") from None

    return guard()


# --- push ------------------------------------------------------------------------------------

def parent_hub_id(catalog: Catalog, entry: ModelEntry) -> str:
    """A parent's Hub id: its own `hub:` location, else where it was pushed, else its name."""
    if (entry.location or "").startswith("hub:"):
        return hub_id(entry.location, entry.name)
    pushes = (entry.card or {}).get("hub_pushes") or []
    return pushes[-1]["repo_id"] if pushes else entry.name


def card_for(catalog: Catalog, ref: str | int) -> str:
    """The model card to push: lineage (parents, roles, weights) and the recipe that made it."""
    from .registry import get_operator

    info = catalog.show(ref)
    run = info.get("run") or {}
    operator = run.get("operator") or "import"
    parents = []
    for edge in info["parents"]:
        p = catalog.get(edge["parent_id"])
        parents.append({"ref": p.ref, "name": p.name, "location": "hub:" + parent_hub_id(catalog, p),
                        "digest": p.digest, "role": edge["role"], "weight": edge.get("weight")})
    relation = None
    if run.get("operator"):
        try:
            relation = get_operator(run["operator"]).relation
        except ZooError:
            relation = None
    relation = relation or ("finetune" if parents and len(parents) == 1 else "merge" if len(parents) > 1 else None)
    library = hub_library(info.get("family"))
    return model_card(info["name"], operator, run.get("params") or {}, parents, relation, library=library)


def push(catalog: Catalog, ref: str | int, repo_id: str, *, private: bool = False, revision: str | None = None,
         message: str | None = None, token: str | None = None) -> PushResult:
    from huggingface_hub import CommitOperationAdd

    entry = catalog.get(ref)
    ckpt = catalog.open(entry)
    card = card_for(catalog, entry.id).encode()
    ops = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(ckpt.root / rel))
           for rel in ckpt.files() + [r for r in ckpt.side_files if r not in ckpt.files()] if rel != "README.md"]
    ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card))
    api = _api(token)
    with _hub_errors(f"push {entry.ref} to {repo_id}"):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.create_commit(repo_id, ops, commit_message=message or f"weightzoo: {entry.ref}",
                                 revision=revision)
    pushes = list((entry.card or {}).get("hub_pushes") or [])
    pushes.append({"repo_id": repo_id, "commit": info.oid, "revision": revision or "main", "digest": entry.digest,
                   "url": info.commit_url})
    catalog.set_card(entry.id, {"hub_pushes": pushes})
    return PushResult(repo_id, info.oid, info.commit_url, len(ops))


# --- pull ------------------------------------------------------------------------------------

def parse_spec(spec: str) -> tuple[str, str | None]:
    repo_id, _, rev = spec.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ZooError(f"{spec!r}: give a Hub repo id like org/name (optionally @revision)")
    return repo_id, rev or None


def safe_relpath(name: str) -> str:
    """A remote file name as a path inside the target folder, or a refusal."""
    p = PurePosixPath(name)
    if not name or "\\" in name or p.is_absolute() or any(part in ("..", "") for part in name.split("/")):
        raise ZooError(f"refusing remote path {name!r}: it would escape the download folder")
    return str(p)


def _check(path: Path, sha256: str | None, blob_id: str | None, name: str) -> None:
    data = path.read_bytes() if blob_id and not sha256 else None
    if sha256:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != sha256:
            raise ZooError(f"{name}: sha256 {h.hexdigest()[:12]}... does not match the Hub's {sha256[:12]}...; "
                           "nothing was registered")
    elif blob_id:
        got = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        if got != blob_id:
            raise ZooError(f"{name}: git blob id does not match the Hub's; nothing was registered")
    else:
        raise ZooError(f"{name}: the Hub reports no checksum for this file; refusing it")


@contextmanager
def _quiet_retries():
    """huggingface-hub logs every retry of a cut download as a warning (a dozen lines before
    the error): keep them out of the terminal; the one-line error names the URL."""
    import logging

    log = logging.getLogger("huggingface_hub")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _download(action: str, repo_id: str, rel: str, commit: str, target: Path, cache: Path,
              token: str | None) -> Path:
    """One file of a pull; a transport failure (after huggingface-hub's retries) as one line
    naming the URL. HTTP answers (not found, forbidden) are left to `_hub_errors`."""
    from huggingface_hub import hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        return Path(hf_hub_download(repo_id, rel, revision=commit, local_dir=target, cache_dir=cache,
                                    endpoint=endpoint, token=token))
    except (ZooError, HfHubHTTPError):
        raise
    except Exception as e:  # noqa: BLE001 - transport errors differ between huggingface-hub versions
        if isinstance(e, OSError) and disk_full(e, target) is not None:
            raise
        url = hf_hub_url(repo_id, rel, revision=commit, endpoint=endpoint)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ZooError(f"{action}: downloading {url} failed ({reason}); check the connection and run again "
                       "(nothing was registered)") from None


def lineage_from_card(catalog: Catalog, card_text: str) -> list[Parent]:
    """Parents named in a weightzoo card that this catalog has: by content digest, else by
    the Hub id the card gives (`base_model`) among models pulled from the Hub."""
    recipe = read_card_recipe(card_text) or {}
    front = front_matter(card_text)  # size- and alias-limited: the card comes from the Hub
    hub_ids = front.get("base_model") or []
    hub_ids = [hub_ids] if isinstance(hub_ids, str) else hub_ids
    pulled = {}
    for row in catalog.ls():
        loc = row.get("location") or ""
        if loc.startswith("hub:"):
            pulled.setdefault(loc[4:].split("@", 1)[0], row["id"])
    parents = []
    for i, item in enumerate(recipe.get("inputs") or []):
        found = catalog.find_digest(item.get("digest") or "")
        parent_id = found.id if found is not None else pulled.get(hub_ids[i] if i < len(hub_ids) else "")
        if parent_id is not None:
            parents.append(Parent(parent_id, item.get("role") or "base", item.get("weight")))
    return parents


def pull(catalog: Catalog, spec: str, *, name: str | None = None, token: str | None = None,
         progress: Callable[[int], None] | None = None) -> PullResult:
    repo_id, rev = parse_spec(spec)
    api = _api(token)
    with _hub_errors(f"pull {spec}"):
        info = api.model_info(repo_id, revision=rev, files_metadata=True)
    commit = info.sha
    source = f"hub:{repo_id}@{commit}"
    for row in catalog.ls():
        if row.get("location") == source:
            return PullResult(catalog.get(row["id"]), False, commit)
    files = [(safe_relpath(s.rfilename), s) for s in info.siblings or []]
    if not files:
        raise ZooError(f"{spec}: the repository has no files")
    target = catalog.incoming_path()
    cache = target.parent / f".hf-cache-{target.name}"
    try:
        if progress is not None and hasattr(progress, "set_total"):
            progress.set_total(sum(s.size or 0 for _, s in files))
        with _hub_errors(f"pull {spec}"), _quiet_retries():
            for rel, sib in files:
                path = _download(f"pull {spec}", repo_id, rel, commit, target, cache, token)
                if target.resolve() not in path.resolve().parents:
                    raise ZooError(f"refusing remote path {rel!r}: it would escape the download folder")
                _check(path, sib.lfs.sha256 if sib.lfs else None, sib.blob_id, rel)
                if progress is not None:
                    progress(sib.size or 0)
        shutil.rmtree(target / ".cache", ignore_errors=True)  # huggingface-hub's local-dir metadata
        card = (target / "README.md").read_text(errors="replace") if (target / "README.md").exists() else ""
        result = catalog.add(target, name or repo_id.split("/")[1], parents=lineage_from_card(catalog, card),
                             source=source, tags=["hub"])
        target = None  # adopted by the catalog
        return PullResult(result.entry, result.created, commit)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if target is not None:
            shutil.rmtree(target, ignore_errors=True)
