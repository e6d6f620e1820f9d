"""graphrec: a multimodal knowledge-graph recommendation engine that stays good for new items and users."""
from graphrec.errors import InputError
from graphrec.workspace import Workspace

__version__ = "0.1.0"
__all__ = ["InputError", "Workspace", "__version__", "load_export"]


def __getattr__(name: str):
    if name == "load_export":  # imported lazily: it pulls in numpy, pandas and pyarrow
        from graphrec.export import load_export

        return load_export
    raise AttributeError(f"module 'graphrec' has no attribute {name!r}")
