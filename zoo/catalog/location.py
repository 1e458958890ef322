"""Where the catalog is: a path or SQLAlchemy URL, resolved without importing SQLAlchemy
(so that read-only commands on a SQLite catalog can start fast)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

DEFAULT_CATALOG = "catalog.db"

# SQLAlchemy's own URL pattern: user, then an optional `:password` up to the first '@'
_CREDENTIALS = re.compile(r"^(?P<head>[\w+]+://(?P<user>[^:/]*)):(?P<password>[^@]*)@", re.S)
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&]password=)[^&]*", re.I)


def resolve_url(target: str | os.PathLike | None) -> str:
    """A path or SQLAlchemy URL; None means $ZOO_CATALOG, else ./catalog.db."""
    target = target if target is not None else os.environ.get("ZOO_CATALOG") or DEFAULT_CATALOG
    text = str(target)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().absolute()}"


def sqlite_path(url: str) -> Path | None:
    """The database file of a file-backed SQLite URL, else None."""
    scheme, _, rest = url.partition("://")
    if scheme.split("+")[0] != "sqlite" or not rest.startswith("/"):
        return None
    path = unquote(rest[1:].split("?", 1)[0])
    if not path or path == ":memory:":
        return None
    return Path(path)


def display_url(url: str) -> str:
    """A catalog URL safe to print: any password shown as `***`, as SQLAlchemy's
    `URL.render_as_string(hide_password=True)` does (a `password=` query field too)."""
    url = _CREDENTIALS.sub(r"\g<head>:***@", url, count=1)
    return _QUERY_PASSWORD.sub(r"\g<key>***", url)
