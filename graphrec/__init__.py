"""graphrec: a multimodal knowledge-graph recommendation engine that stays good for new items and users.

The installed namespace is this one package: graphrec.data (canonical tables, readers, splits),
graphrec.kg (the knowledge graph), the stages (graphrec.stages.encode, .train, .rank, .evaluate,
.recommend, .export, .update), the Python API (graphrec.Recommender, docs/api.md) and the command
line (graphrec.app.cli). docs/architecture.md draws the layers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from graphrec.core.errors import InputError
from graphrec.core.workspace import Workspace
from graphrec.model.export_format import Export, load_export

if TYPE_CHECKING:  # for type checkers; at run time __getattr__ below provides it
    from graphrec.pipeline.api import Recommender

__version__ = "0.1.0"
__all__ = [
    "Export",
    "InputError",
    "Recommender",
    "Workspace",
    "__version__",
    "load_export",
]


def __getattr__(name: str) -> Any:
    """Give `graphrec.Recommender`, imported on first use (a PEP 562 lazy attribute).

    The Recommender runs the stages, which need torch, and `import graphrec` /
    `graphrec.load_export` must stay light (no torch).

    Args:
        name: The attribute asked for on the module.

    Returns:
        The class :class:`graphrec.pipeline.api.Recommender` when `name` is ``"Recommender"``.

    Raises:
        AttributeError: For any other name, as for a missing module attribute.
    """
    if name == "Recommender":
        return importlib.import_module("graphrec.pipeline.api").Recommender
    raise AttributeError(f"module 'graphrec' has no attribute {name!r}")
