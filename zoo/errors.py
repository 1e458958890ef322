"""One error type users see: a one-line message saying what is wrong and what to do.

Front ends print `ZooError` as a single line and exit non-zero; anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import difflib


class ZooError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 1


class NotFoundError(ZooError):
    """A path, catalog reference or tensor that does not exist."""


class CorruptCheckpointError(ZooError):
    """Weights that cannot be read: bad header, truncated data, unsupported format."""


class CatalogError(ZooError):
    """The catalog database cannot be opened or is not a weightzoo catalog."""


class MismatchError(ZooError):
    """Inputs that do not fit together: shapes, dtypes, architectures."""


class RefusedError(ZooError):
    """An action refused to protect data (e.g. removing a model others descend from)."""


def did_you_mean(word: str, candidates: "list[str] | set[str]") -> str:
    """' (did you mean X?)' with the candidate a typo most likely meant, or '' if none is close."""
    found = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.75)
    return f" (did you mean {found[0]}?)" if found else ""
