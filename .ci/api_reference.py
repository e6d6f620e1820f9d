"""Write docs/reference.md, the API reference, from the signatures and docstrings of graphrec's public surface.

python .ci/api_reference.py          # rewrite docs/reference.md
python .ci/api_reference.py --check  # exit 1 when docs/reference.md is not what the code says (the tests run it)
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parent.parent / "docs" / "reference.md"
# (section, module, public names in the order a reader meets them)
SURFACE = (
    ("Python API", "graphrec.pipeline.api", ("Recommender",)),
    (
        "The recommend contract",
        "graphrec.model.lists",
        ("Recommendations", "ListRequest", "list_request"),
    ),
    (
        "Exports",
        "graphrec.model.export_format",
        ("load_export", "Export", "UserFoldIn", "pseudonymize_id"),
    ),
    ("Workspaces and errors", "graphrec.core.workspace", ("Workspace",)),
    ("Workspaces and errors", "graphrec.core.errors", ("InputError",)),
    ("Stages", "graphrec.data.importer", ("import_files",)),
    ("Stages", "graphrec.data.movielens", ("import_movielens",)),
    ("Stages", "graphrec.data.synth", ("run_synth",)),
    ("Stages", "graphrec.data.splits", ("run_split",)),
    (
        "Stages",
        "graphrec.core.settings",
        ("SplitSettings", "EncodeSettings", "TrainSettings", "RankSettings"),
    ),
    ("Stages", "graphrec.stages.encode", ("run_encode",)),
    ("Stages", "graphrec.kg.build", ("run_build",)),
    ("Stages", "graphrec.stages.train", ("run_train",)),
    ("Stages", "graphrec.stages.rank", ("fit_blend",)),
    ("Stages", "graphrec.stages.evaluate", ("run_evaluate",)),
    ("Stages", "graphrec.stages.recommend", ("recommend",)),
    ("Stages", "graphrec.stages.export", ("export",)),
    ("Stages", "graphrec.stages.update", ("run_update",)),
    ("Stages", "graphrec.pipeline.quickstart", ("run_quickstart",)),
)


def _signature(obj: object) -> str:
    try:
        return str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "(...)"


def _entry(module: str, name: str) -> list[str]:
    obj = getattr(importlib.import_module(module), name)
    kind = "class" if inspect.isclass(obj) else "function"
    out = [
        f"### `{module}.{name}`",
        "",
        "```python",
        f"{kind} {name}{_signature(obj)}",
        "```",
        "",
        inspect.cleandoc(obj.__doc__ or "(no docstring)"),
        "",
    ]
    if inspect.isclass(obj):
        for attr, member in sorted(vars(obj).items()):
            if attr.startswith("_") or not (
                inspect.isfunction(member)
                or isinstance(member, (classmethod, property))
            ):
                continue
            target = member.__func__ if isinstance(member, classmethod) else member
            doc = inspect.cleandoc(getattr(target, "__doc__", None) or "")
            sig = "" if isinstance(member, property) else _signature(target)
            summary = " ".join(
                doc.split("\n\n")[0].split()
            )  # the first paragraph, on one line
            out += [f"* `{name}.{attr}{sig}`" + (f": {summary}" if summary else ""), ""]
    return out


def render() -> str:
    lines = [
        "# API reference",
        "",
        "Generated from the code by `python .ci/api_reference.py` (the tests check it is current): the public",
        "surface's signatures and docstrings. The guides: [api.md](api.md) (the Python API), [cli.md](cli.md),",
        "[export.md](export.md), [architecture.md](architecture.md) (where each module lives).",
        "",
    ]
    section = None
    for title, module, names in SURFACE:
        if title != section:
            lines += [f"## {title}", ""]
            section = title
        for name in names:
            lines += _entry(module, name)
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    text = render()
    if "--check" in sys.argv:
        if not PAGE.exists() or PAGE.read_text(encoding="utf-8") != text:
            sys.stderr.write(
                f"{PAGE} is not current: run python .ci/api_reference.py\n"
            )
            sys.exit(1)
        return
    PAGE.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
