"""Collection of the package's docstring examples (``--doctest-modules`` on ``auq/``, see pyproject.toml).

Modules that need an optional dependency are left out of collection where it is not installed;
the tests under ``tests/`` skip the same way.
"""

import importlib.util


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


collect_ignore = []
if not _installed("trl"):
    collect_ignore.append("auq/integrations/trl.py")  # needs TRL (pip install "auq[trl]")
