"""YAML that users give us (pipelines, mergekit configs, `--set KEY=VALUE`), read with limits.

YAML aliases let a few hundred bytes name billions of values (the "billion laughs"):
PyYAML shares the aliased objects, so parsing itself is quick, but everything after it
that walks, copies or validates the values (grid points, params models, JSON for the
run record) expands them and runs for minutes and gigabytes. So before constructing
anything we cap the text's size and the number of values the document holds once its
aliases are expanded, counted on the node graph without expanding it, and refuse
recursive aliases; each refusal is one line naming the source.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ZooError

MAX_BYTES = 1024 * 1024  # 1 MiB: far more than any pipeline or merge config needs
MAX_VALUES = 100_000  # scalars, lists and mappings, counted with every alias expanded


class YamlLimitError(ZooError):
    """YAML input refused before parsing: too large, too many expanded values, recursive."""


class _Refused(Exception):
    """Raised inside the loader; `load_text` turns it into a one-line YamlLimitError."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def expanded_size(root: yaml.Node, limit: int = MAX_VALUES) -> int:
    """How many nodes the document has with every alias expanded, computed on the shared
    node graph in time linear in its distinct nodes; raise _Refused past `limit` or on a
    recursive alias. Iterative, so deep nesting cannot exhaust the Python stack."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the current path: meeting one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            if sizes[key] > limit:
                raise _Refused(f"holds more than {limit:,} values once its aliases are expanded "
                               "(an alias bomb?); write the values out, with fewer aliases")
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise _Refused(f"has a recursive alias ({_mark(node)}): an anchor used inside itself")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def _mark(node: yaml.Node) -> str:
    mark = node.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"


class LimitedLoader(yaml.SafeLoader):
    """SafeLoader that checks the composed document's expanded size before constructing it."""

    def get_single_node(self):  # noqa: ANN201 - PyYAML's own signature
        node = super().get_single_node()
        if node is not None:
            expanded_size(node)
        return node


def load_text(text: str, where: str) -> Any:
    """Parse YAML text from the user; one-line ZooError (naming `where`) for anything
    too large, an alias bomb, nesting too deep, or text that is not YAML."""
    if len(text.encode("utf-8", "surrogateescape")) > MAX_BYTES:
        raise YamlLimitError(f"{where}: larger than the {MAX_BYTES // 1024 // 1024} MiB limit for YAML input")
    try:
        return yaml.load(text, Loader=LimitedLoader)  # noqa: S506 - a SafeLoader subclass
    except _Refused as e:
        raise YamlLimitError(f"{where}: refused: the YAML {e}") from None
    except RecursionError:
        raise YamlLimitError(f"{where}: refused: the YAML is nested too deeply") from None
    except yaml.YAMLError as e:
        raise ZooError(f"{where}: not valid YAML ({_first_line(e)})") from None


def load_all_text(text: str, where: str) -> list[Any]:
    """Every document of a YAML stream (`---` between them), with the same limits as
    `load_text`: the size of the whole text, and the expanded values of all documents
    together."""
    if len(text.encode("utf-8", "surrogateescape")) > MAX_BYTES:
        raise YamlLimitError(f"{where}: larger than the {MAX_BYTES // 1024 // 1024} MiB limit for YAML input")
    loader = LimitedLoader(text)
    docs, total = [], 0
    try:
        while loader.check_node():
            node = loader.get_node()
            total += expanded_size(node, MAX_VALUES - total)
            docs.append(loader.construct_document(node))
        return docs
    except _Refused as e:
        raise YamlLimitError(f"{where}: refused: the YAML {e}") from None
    except RecursionError:
        raise YamlLimitError(f"{where}: refused: the YAML is nested too deeply") from None
    except yaml.YAMLError as e:
        raise ZooError(f"{where}: not valid YAML ({_first_line(e)})") from None
    finally:
        loader.dispose()


def read_text(path: str | Path, what: str = "YAML file") -> str:
    """A YAML file's text, its size checked before reading it; one-line errors."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ZooError(f"no such {what}: {path}") from None
    except IsADirectoryError:
        raise ZooError(f"{path}: is a folder, not a {what}") from None
    except OSError as e:
        raise ZooError(f"{path}: cannot read the {what} ({e.strerror})") from None
    if len(raw) > MAX_BYTES:
        raise YamlLimitError(f"{path}: larger than the {MAX_BYTES // 1024 // 1024} MiB limit for YAML input")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ZooError(f"{path}: not UTF-8 text (byte {e.start})") from None


def load_all_file(path: str | Path, what: str = "YAML file") -> list[Any]:
    """Every document of a YAML file the user gave (see load_all_text)."""
    return load_all_text(read_text(path, what), str(path))


def load_file(path: str | Path, what: str = "YAML file") -> Any:
    """Read and parse a YAML file the user gave; the size is checked before reading it."""
    return load_text(read_text(path, what), str(path))


def _first_line(e: yaml.YAMLError) -> str:
    """PyYAML's problem and where it is, without its multi-line context dump."""
    problem = getattr(e, "problem", None) or getattr(e, "context", None)
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__
