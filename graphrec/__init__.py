"""graphrec: a multimodal knowledge-graph recommendation engine that stays good for new items and users.

The installed namespace is this one package: graphrec.data (canonical tables, readers, splits), graphrec.kg
(the knowledge graph), the stages (graphrec.encode, .train, .rank, .evaluate, .recommend, .export, .update)
and the command line (graphrec.cli). docs/architecture.md draws the layers.
"""
from graphrec.errors import InputError
from graphrec.export_folder import Export, load_export
from graphrec.workspace import Workspace

__version__ = "0.1.0"
__all__ = ["Export", "InputError", "Workspace", "__version__", "load_export"]
