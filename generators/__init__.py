"""generators: operators that make new models - LEMON expansion (with the bert2bert and
Net2Net baselines) and, in later issues, weight generation. Importing registers them."""
from . import expand as _expand  # noqa: F401  (registers expand.*)
from .wgen import operators as _wgen  # noqa: F401  (registers generate.*)

__all__: list[str] = []
