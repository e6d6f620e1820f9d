"""graphrec: a multimodal knowledge-graph recommendation engine that stays good for new items and users."""
from graphrec.errors import InputError
from graphrec.workspace import Workspace

__version__ = "0.1.0"
__all__ = ["InputError", "Workspace", "__version__"]
