"""sha256 of files: hashed in parallel, in the background, and while written - each digest
checked against hashlib over the file's bytes as they are on disk."""
from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import zoo.hashing as hashing
import zoo.writer as writer
from zoo import Catalog, CheckpointWriter, TensorSpec
from zoo.errors import ZooError
from zoo.hashing import BLOCK, BackgroundHashes, HashingStopped, WriteHasher, sha256_files
from zoo.writer import all_finite


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def files(tmp_path):
    """Files of awkward sizes: empty, one byte, one block, a block and a bit, several blocks."""
    rng = random.Random(0)
    paths = []
    for i, size in enumerate([0, 1, BLOCK, BLOCK + 7, 3 * BLOCK + 1, 1000]):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(rng.randbytes(size))
        paths.append(p)
    return paths


def test_parallel_digests_equal_serial_ones_in_the_order_given(files):
    expected = [_digest(p) for p in files]
    assert sha256_files(files, workers=1) == expected
    assert sha256_files(files) == expected
    assert sha256_files(list(reversed(files)), workers=3) == list(reversed(expected))
    assert BackgroundHashes(files).result() == expected


def test_progress_counts_every_byte(files):
    seen, lock = [], threading.Lock()

    def progress(n):
        with lock:
            seen.append(n)

    sha256_files(files, progress)
    assert sum(seen) == sum(p.stat().st_size for p in files)


def test_cancelled_background_hashing_stops_at_the_next_block(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(4 * BLOCK))
    first_block, go_on = threading.Event(), threading.Event()

    def progress(_n):
        first_block.set()
        go_on.wait(5)

    hashes = BackgroundHashes([big], progress)
    assert first_block.wait(5)
    hashes.cancel()
    go_on.set()
    with pytest.raises(HashingStopped):
        hashes.result()


def test_progress_attached_after_hashing_began_counts_every_byte_once(files):
    """`zoo add` starts hashing before its progress bar exists (zoo.entry): the bar gets the
    bytes hashed so far when attached, then the rest."""
    hashes = BackgroundHashes(files)
    hashes.result()  # (all of it before the bar, the extreme case)
    seen = []
    hashes.report_to(seen.append)
    assert sum(seen) == sum(p.stat().st_size for p in files)


@pytest.mark.parametrize("argv, path", [
    (["add", "ck"], "ck"),
    (["--catalog", "c.db", "add", "ck", "--name", "n", "-t", "x", "--json"], "ck"),
    (["-C", "c.db", "--debug", "add", "--parent", "p:base", "ck"], "ck"),
    (["add", "ck", "--copy"], None),  # copied, not indexed in place: nothing to start
    (["add", "ck", "other"], None),  # a usage mistake: left to the CLI
    (["add", "--help"], None),
    (["ls", "ck"], None),
    (["--version"], None),
])
def test_the_console_script_recognises_a_plain_zoo_add(argv, path):
    from zoo.argv_scan import add_path

    assert add_path(argv) == path


def test_zoo_add_through_the_console_script_records_the_files_digests(tmp_path):
    """The early hashing started before the CLI loads is the one recorded (and right)."""
    from safetensors.torch import save_file

    folder = tmp_path / "ck"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for k in range(2):
        save_file({f"w{k}": torch.randn(300_000 + k, generator=g)}, folder / f"model-{k + 1:05d}-of-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"w0": "model-00001-of-00002.safetensors", "w1": "model-00002-of-00002.safetensors"}}))
    (folder / "config.json").write_text('{"model_type": "test"}')
    proc = subprocess.run([sys.executable, "-m", "zoo", "--catalog", str(tmp_path / "c.db"), "add", str(folder), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    recorded = {f["path"]: f["sha256"] for f in json.loads(proc.stdout)["files"]}
    assert recorded == {p.name: _digest(p) for p in folder.iterdir()}


def test_hashing_a_missing_file_says_which(tmp_path, files):
    with pytest.raises(FileNotFoundError, match="missing"):
        sha256_files([*files, tmp_path / "missing"])


# ----- hashing while writing ---------------------------------------------------------------

def _written_in_pieces(tmp_path, order, threads: int, keep: int = 1 << 30):
    """A file written as ranges in `order`, each noted to a WriteHasher (holding copies of
    up to `keep` bytes written ahead); (hasher, digest, path, pieces)."""
    rng = random.Random(1)
    head = b"header!!"
    pieces = [rng.randbytes(n) for n in (5, BLOCK + 3, 17, 2 * BLOCK, 1, 999)]
    starts = [len(head)]
    for p in pieces[:-1]:
        starts.append(starts[-1] + len(p))
    path = tmp_path / "w.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    os.pwrite(fd, head, 0)
    hasher = WriteHasher(fd, head, len(head) + sum(map(len, pieces)), keep=keep)

    def write(i):
        os.pwrite(fd, pieces[i], starts[i])
        hasher.wrote(starts[i], memoryview(pieces[i]))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, order))
    digest = hasher.hexdigest()
    os.close(fd)
    return hasher, digest, path, pieces


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("keep", [0, BLOCK, 1 << 30])
def test_write_hasher_gives_the_file_digest_whatever_the_order_and_threads(tmp_path, seed, keep):
    """Ranges ahead of the hash are held in memory up to `keep` bytes, else read back."""
    order = list(range(6))
    random.Random(seed).shuffle(order)
    hasher, digest, path, pieces = _written_in_pieces(tmp_path, order, threads=1 + seed % 3, keep=keep)
    assert digest == _digest(path)
    assert hasher.read_back < sum(map(len, pieces))  # at least the first range came from memory
    if keep == 1 << 30:
        assert hasher.read_back == 0


def test_write_hasher_in_order_reads_nothing_back(tmp_path):
    hasher, digest, path, _ = _written_in_pieces(tmp_path, range(6), threads=1)
    assert digest == _digest(path) and hasher.read_back == 0


def test_write_hasher_with_a_gap_gives_no_digest(tmp_path):
    hasher, digest, _, _ = _written_in_pieces(tmp_path, [0, 1, 3, 4, 5], threads=1)  # range 2 never written
    assert digest is None


def _write_checkpoint(target, tensors, order, threads=1, chunks=1, **kwargs):
    specs = [TensorSpec(n, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in tensors.items()]
    with CheckpointWriter(target, specs, config={"model_type": "test"}, **kwargs) as w:
        def write(name):
            flat = tensors[name].reshape(-1)
            step = -(-flat.numel() // chunks)
            for start in range(0, flat.numel(), step):
                w.write_slice(name, start, flat[start: start + step])

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(write, order))
    return w.result


def _tensors(rows: int = 300):
    g = torch.Generator().manual_seed(0)
    return {f"t{i}": torch.randn(rows + 37 * i, 211, generator=g).to(torch.bfloat16 if i % 2 else torch.float32)
            for i in range(8)}


def _same_tensors(path, tensors) -> None:
    from safetensors.torch import load_file

    got = {}
    for shard in path.glob("*.safetensors"):
        got.update(load_file(shard))
    assert got.keys() == tensors.keys() and all(torch.equal(got[k], v) for k, v in tensors.items())


def test_written_digests_are_the_files_sha256_without_reading_them(tmp_path, monkeypatch):
    """In order: every shard is hashed from memory as written - the file is never read (no
    read-back, no fallback hash of the file) - and every digest is that of its bytes."""
    read_back, hashed_files = [], []
    real_preadv, real_sha256_file = os.preadv, writer.sha256_file
    monkeypatch.setattr(hashing.os, "preadv", lambda *a: read_back.append(a) or real_preadv(*a))
    monkeypatch.setattr(writer, "sha256_file", lambda p, *a, **k: hashed_files.append(p) or real_sha256_file(p, *a, **k))
    tensors = _tensors()
    out = _write_checkpoint(tmp_path / "out", tensors, list(tensors), max_shard_size="600KB")
    assert len([f for f in out.files if f.path.endswith(".safetensors")]) > 1
    assert {f.path for f in out.files} >= {"config.json", "model.safetensors.index.json"}
    for f in out.files:
        assert f.sha256 == _digest(tmp_path / "out" / f.path), f.path
        assert f.size == (tmp_path / "out" / f.path).stat().st_size
    assert read_back == [] and hashed_files == []


@pytest.mark.parametrize("threads,chunks", [(1, 3), (3, 1), (3, 4)])
@pytest.mark.parametrize("rows", [300, 4000])  # 4000: megabyte tensors, written around the page cache
@pytest.mark.parametrize("keep", [None, 0])  # 0: what is written ahead of the hash is read back from the file
def test_digests_are_right_for_tensors_written_out_of_order_in_pieces(tmp_path, monkeypatch, threads, chunks, rows,
                                                                        keep):
    if keep is not None:
        monkeypatch.setattr(writer, "WriteHasher", functools.partial(WriteHasher, keep=keep))
    tensors = _tensors(rows)
    order = list(tensors)
    random.Random(threads * 10 + chunks).shuffle(order)
    out = _write_checkpoint(tmp_path / "out", tensors, order, threads, chunks, max_shard_size=f"{rows * 2}KB")
    for f in out.files:
        assert f.sha256 == _digest(tmp_path / "out" / f.path), f.path
    _same_tensors(tmp_path / "out", tensors)
    reread = Catalog(tmp_path / "c.db", store=tmp_path / "store").add(tmp_path / "out").entry
    assert reread.bytes == sum(f.size for f in out.files)


def _direct_writes(monkeypatch, refuse: bool = False) -> list[int]:
    """Count the writes that go around the page cache (or refuse them as some filesystems do)."""
    direct_fds, writes = set(), []
    real_open, real_pwrite = writer.open_direct, os.pwrite

    def open_direct(path):
        fd = real_open(path)
        if fd is not None:
            direct_fds.add(fd)
        return fd

    def pwrite(fd, data, offset):
        if fd in direct_fds:
            if refuse:
                raise OSError(errno.EINVAL, "Invalid argument")
            writes.append(len(data))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(writer, "open_direct", open_direct)
    monkeypatch.setattr(writer.os, "pwrite", pwrite)
    return writes


@pytest.mark.parametrize("refuse", [False, True])
def test_large_tensors_go_around_the_page_cache_unless_refused(tmp_path, monkeypatch, refuse):
    (tmp_path / "probe").write_bytes(b"")
    probe = writer.open_direct(tmp_path / "probe")
    if probe is None:
        pytest.skip("no direct I/O on this filesystem")
    os.close(probe)
    writes = _direct_writes(monkeypatch, refuse)
    tensors = _tensors(4000)
    out = _write_checkpoint(tmp_path / "out", tensors, list(tensors), threads=2)
    for f in out.files:
        assert f.sha256 == _digest(tmp_path / "out" / f.path), f.path
    _same_tensors(tmp_path / "out", tensors)
    if not refuse:
        assert sum(writes) > 0.8 * sum(t.numel() * t.element_size() for t in tensors.values())
        assert all(n % writer.ALIGN == 0 for n in writes)


def test_a_tensor_streamed_in_one_mib_slices_goes_around_the_page_cache(tmp_path, monkeypatch):
    """The merge engine writes 1 MiB slices (512k bfloat16 elements) at offsets that are not
    block-aligned: each slice's aligned middle (just under 1 MiB) must still be written
    directly, not all of it through the page cache (it was: TA merges 3x slower)."""
    (tmp_path / "probe").write_bytes(b"")
    probe = writer.open_direct(tmp_path / "probe")
    if probe is None:
        pytest.skip("no direct I/O on this filesystem")
    os.close(probe)
    writes = _direct_writes(monkeypatch)
    g = torch.Generator().manual_seed(0)
    tensors = {"small": torch.randn(37, generator=g).to(torch.bfloat16),  # pushes the big one off alignment
               "big": torch.randn(8 * 512 * 1024, generator=g).to(torch.bfloat16)}
    out = _write_checkpoint(tmp_path / "out", tensors, list(tensors), chunks=8)
    for f in out.files:
        assert f.sha256 == _digest(tmp_path / "out" / f.path), f.path
    _same_tensors(tmp_path / "out", tensors)
    assert sum(writes) > 0.95 * tensors["big"].numel() * 2


def test_a_full_disk_during_background_direct_writes_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    real_open, real_pwrite, direct_fds = writer.open_direct, os.pwrite, set()

    def open_direct(path):
        fd = real_open(path)
        if fd is None:
            pytest.skip("no direct I/O on this filesystem")
        direct_fds.add(fd)
        return fd

    def pwrite(fd, data, offset):
        if fd in direct_fds and len(data) > writer.ALIGN:  # (the one-block probe passes)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(writer, "open_direct", open_direct)
    monkeypatch.setattr(writer.os, "pwrite", pwrite)
    with pytest.raises(ZooError, match="no space left on the disk while writing") as info:
        _write_checkpoint(tmp_path / "out", _tensors(4000), list(_tensors(4000)), threads=2)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name == "zoo-disk"]


def test_side_files_are_copied_and_hashed(tmp_path):
    side = tmp_path / "tokenizer.json"
    side.write_bytes(random.Random(2).randbytes(3 * BLOCK + 5))
    specs = [TensorSpec("w", (4, 4), "float32")]
    with CheckpointWriter(tmp_path / "out", specs, side_files={"tokenizer.json": side},
                          extra_files={"README.md": "card"}) as w:
        w.write("w", torch.ones(4, 4))
    digests = {f.path: f.sha256 for f in w.result.files}
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == side.read_bytes()
    assert digests == {p.name: _digest(p) for p in (tmp_path / "out").iterdir()}


# ----- the finite check every operator output passes ---------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_all_finite_agrees_with_isfinite(dtype):
    base = torch.randn(10_007).to(dtype)
    assert all_finite(base) and all_finite(base[:0]) and all_finite(torch.arange(5))
    for value in (float("nan"), float("inf"), -float("inf")):
        for at in (0, 1, 5_000, 10_000, 10_006):
            t = base.clone()
            t[at] = value
            assert not all_finite(t), (value, at)
            assert not all_finite(t.view(-1, 1)[at:])


# ----- zoo add: hashing started before the catalog opens -----------------------------------

def test_zoo_add_hashes_while_the_catalog_opens_and_records_the_files_digests(run, llama_sharded_dir, monkeypatch):
    import zoo.catalog.catalog as catalog_module

    started = []
    real_init = BackgroundHashes.__init__
    monkeypatch.setattr(BackgroundHashes, "__init__", lambda self, *a, **k: started.append(1) or real_init(self, *a, **k))
    monkeypatch.setattr(catalog_module, "sha256_files", lambda *a, **k: pytest.fail("hashed a second time"))
    assert run("add", str(llama_sharded_dir), "--name", "m")[0] == 0
    assert started == [1]
    rows = Catalog(os.environ["ZOO_CATALOG"]).files_of("m")
    assert sorted(r.path for r in rows) == sorted(p.name for p in llama_sharded_dir.iterdir())
    assert {r.path: r.sha256 for r in rows} == {p.name: _digest(p) for p in llama_sharded_dir.iterdir()}


def test_add_ignores_hashing_of_other_files(catalog, llama_dir, files):
    hashes = BackgroundHashes(files)
    entry = catalog.add(llama_dir, hashes=hashes).entry
    assert {r.path: r.sha256 for r in catalog.files_of(entry)} == {p.name: _digest(p) for p in llama_dir.iterdir()}
