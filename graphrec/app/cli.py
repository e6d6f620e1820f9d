"""The `graphrec` command line: each command parses its options, calls one library function, prints.

Bad input anywhere raises graphrec.InputError; `main` turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import errno
import functools
import importlib.metadata
import inspect
import json
import logging
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from graphrec.core.errors import InputError
from graphrec.core.io import carried_errno, dumps_json
from graphrec.core.settings import (
    BuildSettings,
    EncodeSettings,
    EvaluateSettings,
    ExportSettings,
    QuickstartSettings,
    RankSettings,
    SplitSettings,
    TrainSettings,
)
from graphrec.core.workspace import Workspace, check_output_file
from graphrec.data.dataset import Dataset, excluded_from_lists
from graphrec.data.importer import import_files
from graphrec.data.movielens import import_movielens
from graphrec.data.splits import run_split
from graphrec.data.stats import dataset_stats
from graphrec.data.synth import run_synth
from graphrec.kg.build import run_build
from graphrec.kg.explain import explain_pair
from graphrec.kg.stats import run_stats
from graphrec.model.artifacts import embeddings_path
from graphrec.model.lists import DEFAULT_N

Command = typing.TypeVar("Command", bound=Callable[..., Any])
_typer_click: types.ModuleType
try:  # newer typer raises the usage errors of its own vendored click, not click's
    from typer._click import exceptions as _typer_click
except ImportError:  # older typer: click's own
    _typer_click = click.exceptions

# Commands that need torch (encode, train, evaluate, recommend, update, quickstart) import their stage when they
# run, so `graphrec data ...`, `--help` and a usage error start in a second rather than paying for torch.
app = typer.Typer(
    help=__doc__.splitlines()[0], no_args_is_help=True, pretty_exceptions_enable=False
)
data_app = typer.Typer(
    help="Import, generate, split and inspect datasets.", no_args_is_help=True
)
kg_app = typer.Typer(help="Inspect the knowledge graph.", no_args_is_help=True)


def flag(default: bool, *names: str, help: str) -> Any:
    """A switch: no value follows it, so its help shows none (Typer would print `<bool>`, and `--json true` is a
    usage error)."""
    return typer.Option(default, *names, help=help, metavar="")


def settings_options(*classes: type) -> Callable[[Command], Command]:
    """Decorator: the command takes every field of the settings `classes` that has help
    (graphrec.core.settings.setting) as an option, with the field's default and help.

    The command declares its own parameters and `**settings`; the generated options come after its
    first parameter, and their values reach it in `settings`, converted to the fields' types (a list
    given comma-separated or by repeating the option). A field two classes share is one option.
    """

    def decorate(command: Command) -> Command:
        fields = {}
        for cls in classes:
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                if "help" in f.metadata and f.name not in fields:
                    fields[f.name] = (f, hints[f.name])
        own = [
            p
            for p in inspect.signature(command).parameters.values()
            if p.kind is not p.VAR_KEYWORD
        ]
        generated = [_option(f, kind) for f, kind in fields.values()]

        @functools.wraps(command)
        def run(**given: Any) -> Any:
            for name, (f, kind) in fields.items():
                given[name] = _from_option(f, kind, given[name])
            return command(**given)

        run.__signature__ = inspect.Signature([own[0], *generated, *own[1:]])  # type: ignore[attr-defined]
        return typing.cast(Command, run)

    return decorate


def _option(f: dataclasses.Field, kind: Any) -> inspect.Parameter:
    """The Typer parameter of a settings field: a switch for a bool, text for a comma-separated list."""
    name, help_text = f.name.replace("_", "-"), f.metadata["help"]
    if kind is bool:
        names = f"--{name}/--no-{name}" if f.default else f"--{name}"
        default = flag(typing.cast(bool, f.default), names, help=help_text)
    else:
        value: Any = None if f.metadata.get("repeat") else f.default
        if _is_list(kind) and value is not None:
            value = ",".join(map(str, value))
        default = typer.Option(
            value,
            *f.metadata.get("names", (f"--{name}",)),
            help=help_text,
            show_default=value is not None,
            metavar=f.metadata.get("metavar"),
            envvar=f.metadata.get("envvar"),
            show_envvar="envvar" in f.metadata,
        )
    return inspect.Parameter(
        f.name,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=default,
        annotation=_option_type(f, kind),
    )


def _option_type(f: dataclasses.Field, kind: Any) -> Any:
    """The type Typer parses the option as."""
    if f.metadata.get("path"):
        return Path | None
    if f.metadata.get("repeat"):
        return list[str] | None
    if _is_list(kind):
        return str | None if f.default is None else str
    return kind  # bool, int, str, float, or one of them | None


def _list_item(kind: Any) -> Any:
    """The item type of a list field (`tuple[int, ...]`, `Sequence[str] | None`), None for other fields."""
    union = typing.get_origin(kind) in (typing.Union, types.UnionType)
    for option in typing.get_args(kind) if union else (kind,):
        if typing.get_origin(option) in (tuple, list, collections.abc.Sequence):
            return typing.get_args(option)[0]
    return None


def _is_list(kind: Any) -> bool:
    return _list_item(kind) is not None


def _from_option(f: dataclasses.Field, kind: Any, value: Any) -> Any:
    """The option's value as the field's type: a comma-separated text split (numbers for a list of
    integers), an absent repeatable option the field's default."""
    if f.metadata.get("repeat"):
        return tuple(value or typing.cast(tuple, f.default))
    if not _is_list(kind) or value is None:
        return value
    items = [v.strip() for v in value.split(",") if v.strip()]
    if _list_item(kind) is not int:
        return items
    try:
        return tuple(int(v) for v in items)
    except ValueError:
        flag_name = f.metadata.get("names", (f"--{f.name.replace('_', '-')}",))[0]
        raise InputError(
            f"{flag_name} must be comma-separated integers (got {value!r})"
        ) from None


def _fields_of(cls: type, settings: dict[str, Any]) -> dict[str, Any]:
    """The entries of `settings` that are fields of the settings class `cls`."""
    return {
        f.name: settings[f.name] for f in dataclasses.fields(cls) if f.name in settings
    }


app.add_typer(data_app, name="data")
app.add_typer(kg_app, name="kg")
out = Console(emoji=False)  # ":name:" in an id or a path is text, not an emoji code

WS = typer.Argument(
    ..., help="Workspace folder (one run: dataset/, features/, graph/, model/, eval/)."
)


def _version(value: bool) -> None:
    if value:
        # the installed distribution's version is graphrec.__version__ (tests check); importing the package object
        # would point up from the app layer to the package's face
        _say(f"graphrec {importlib.metadata.version('graphrec')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print the version and exit.",
        metavar="",
    ),
    quiet: bool = flag(
        False,
        "--quiet",
        "-q",
        help="No progress bars, notes or summaries; errors, "
        "warnings and --json output still print.",
    ),
) -> None:
    """graphrec: a multimodal knowledge-graph recommendation engine that stays good for new items and users."""
    out.quiet = quiet
    if quiet:
        os.environ["TQDM_DISABLE"] = (
            "1"  # graphrec.core.progress reads it; so do the tqdm bars of libraries
        )
        logging.getLogger().setLevel(logging.WARNING)


def _is_file(value: str) -> bool:
    """Whether a flag's value names a file; an id list too long for a file name is not one (no OSError)."""
    try:
        return Path(value).is_file()
    except OSError:
        return False


def _file_or_ids(value: str) -> str | list[str]:
    """A flag naming a file of ids (kept as its path) or giving the ids comma-separated."""
    return (
        value if _is_file(value) else [c.strip() for c in value.split(",") if c.strip()]
    )


def _columns(value: str | None) -> list[str] | None:
    return None if value is None else [c.strip() for c in value.split(",") if c.strip()]


def _say(text: str, style: str | None = None) -> None:
    """Print a message as it is: ids, column names and paths in it may hold '[/dim]' or '[bold]', which Rich
    markup would reject (a crash after the work is done) or apply. Tables take user strings as Text for the
    same reason."""
    # paths stay whole for copying
    out.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


JSON = flag(
    False,
    "--json",
    help="Print the result as one JSON object on stdout (nothing else there).",
)


def _result(as_json: bool, payload: dict[str, Any], show: Callable[[], None]) -> None:
    """The command's outcome: `payload` as strict JSON on stdout with --json, else `show()` for people."""
    if as_json:
        sys.stdout.write(dumps_json(payload) + "\n")
    else:
        show()


def _notes(notes: list[str]) -> None:
    for n in notes:
        _say(f"- {n}", "dim")


# ---------------------------------------------------------------------------------------------- data
@data_app.command("import")
def data_import(
    out_ws: Path = typer.Option(..., "--out", help="Workspace folder to write."),
    interactions: Path | None = typer.Option(
        None, help="All interactions (user_id,item_id[,timestamp][,rating|weight])."
    ),
    train: Path | None = typer.Option(None, help="Pre-split: training interactions."),
    valid: Path | None = typer.Option(
        None, help="Pre-split: validation interactions (warm)."
    ),
    test: Path | None = typer.Option(None, help="Pre-split: test interactions (warm)."),
    cold_valid: Path | None = typer.Option(
        None, help="Pre-split: validation interactions of cold items."
    ),
    cold_test: Path | None = typer.Option(
        None, help="Pre-split: test interactions of cold items."
    ),
    cold_user_context: Path | None = typer.Option(
        None,
        help="Pre-split: the few interactions a cold user is known by (given at serving time).",
    ),
    cold_user_valid: Path | None = typer.Option(
        None, help="Pre-split: validation interactions of cold users."
    ),
    cold_user_test: Path | None = typer.Option(
        None, help="Pre-split: test interactions of cold users."
    ),
    items: Path | None = typer.Option(
        None, help="Items table: item_id + text, image and attribute columns."
    ),
    users: Path | None = typer.Option(
        None, help="Users table: user_id + coarse attribute columns."
    ),
    images_dir: Path | None = typer.Option(
        None, help="Folder the image column's paths are relative to."
    ),
    text_columns: str | None = typer.Option(
        None,
        help="Comma-separated text columns (default: title,name,description,text,tags present).",
    ),
    attribute_columns: str | None = typer.Option(
        None, help="Comma-separated categorical columns ('|' separates values)."
    ),
    image_column: str | None = typer.Option(
        None, help="Column holding an image path (default: image)."
    ),
    user_attribute_columns: str | None = typer.Option(
        None,
        help="Comma-separated coarse user attribute columns "
        "(opt-in: none without it; age becomes age bands).",
    ),
    encoding: str = typer.Option("utf-8", help="Text encoding of CSV files."),
    min_rating: float | None = typer.Option(
        None,
        "--min-rating",
        help="Keep only interactions whose rating/weight "
        "is at least this (e.g. 4: ratings as implicit positives).",
    ),
    as_json: bool = JSON,
) -> None:
    """Import CSV/Parquet files (one interactions file, or pre-split parts) into a workspace."""

    ds, notes = import_files(
        out_ws,
        interactions=interactions,
        items=items,
        users=users,
        images_dir=images_dir,
        text_columns=_columns(text_columns),
        attribute_columns=_columns(attribute_columns),
        image_column=image_column,
        user_attribute_columns=_columns(user_attribute_columns),
        encoding=encoding,
        min_rating=min_rating,
        train=train,
        valid=valid,
        test=test,
        cold_valid=cold_valid,
        cold_test=cold_test,
        cold_user_context=cold_user_context,
        cold_user_valid=cold_user_valid,
        cold_user_test=cold_user_test,
    )
    _dataset_result(as_json, ds, out_ws, notes, "imported")


@data_app.command("stats")
def data_stats(workspace: Path = WS, as_json: bool = JSON) -> None:
    """Counts, degree summaries, split parts and attribute cardinalities of the workspace's dataset."""

    with Workspace(workspace).reading():
        stats = dataset_stats(Dataset.load(workspace))
    if as_json:
        _result(True, stats, lambda: None)
        return
    table = Table(title=Text(f"dataset {stats['name']}"), show_header=False)
    for k, v in stats.items():
        table.add_row(k, Text(json.dumps(v) if isinstance(v, (dict, list)) else str(v)))
    out.print(table)


# ---------------------------------------------------------------------------------------------- data synth / data split
@data_app.command("synth")
def data_synth(
    out_ws: Path = typer.Option(
        ..., "--out", help="Workspace folder to write (pictures go to WS/images/)."
    ),
    users: int = typer.Option(300, "--n-users", "--users", help="Number of users."),
    items: int = typer.Option(400, "--n-items", "--items", help="Number of items."),
    interactions: int = typer.Option(
        15000,
        "--n-interactions",
        "--interactions",
        help="Number of (user, item) interactions.",
    ),
    seed: int = typer.Option(
        0, help="Random seed: the same seed gives the same dataset."
    ),
    no_images: bool = flag(
        False, "--no-images", help="Skip drawing pictures (large-scale runs)."
    ),
    image_size: int = typer.Option(64, help="Picture side in pixels."),
    as_json: bool = JSON,
) -> None:
    """Generate a synthetic shop whose pictures, text and attributes predict what users like."""

    ds = run_synth(
        out_ws,
        users,
        items,
        interactions,
        seed,
        images=not no_images,
        image_size=image_size,
    )
    _dataset_result(as_json, ds, out_ws, [], "generated")


def _dataset_result(
    as_json: bool,
    ds: Dataset,
    ws: Path,
    notes: list[str],
    verb: str,
    item_detail: str = "",
    rows: str = "interactions",
) -> None:
    counts = {
        "users": ds.n_users,
        "items": ds.n_items,
        "interactions": len(ds.interactions),
    }

    def show() -> None:
        _notes(notes)
        _say(
            f"{verb} {ds.n_users} users, {ds.n_items} items{item_detail}, {len(ds.interactions)} {rows} -> "
            f"{ws}/dataset"
        )

    _result(as_json, {"workspace": str(ws), **counts, "notes": notes}, show)


@data_app.command("split")
@settings_options(SplitSettings)
def data_split(
    workspace: Path = WS,
    force: bool = flag(
        False, "--force", help="Re-split a dataset that is already split."
    ),
    as_json: bool = JSON,
    **settings: Any,
) -> None:
    """Fill the split column: warm train/valid/test, cold items and cold users, with no leaks."""
    with contextlib.nullcontext() if as_json else out.status("splitting interactions"):
        ds = run_split(workspace, SplitSettings(**settings), force=force)
    parts = ds.counts()["parts"]

    def show() -> None:
        table = Table(title=Text(f"split of {workspace}"), show_header=True)
        table.add_column("part")
        table.add_column("interactions", justify="right")
        for part, n in parts.items():
            table.add_row(part, str(n))
        out.print(table)

    _result(as_json, {"workspace": str(workspace), "parts": parts}, show)


# ---------------------------------------------------------------------------------------------- data movielens
@data_app.command("movielens")
def data_movielens(
    path: Path = typer.Argument(
        ..., help="Unzipped MovieLens folder (ml-100k or ml-latest-small)."
    ),
    out_ws: Path = typer.Option(..., "--out", help="Workspace folder to write."),
    variant: str = typer.Option("100k", help="100k | latest-small."),
    posters: Path | None = typer.Option(
        None, help="Folder of item images named <movieId>.jpg."
    ),
    download: bool = flag(
        False,
        "--download",
        help="Fetch the official GroupLens zip into PATH if PATH is missing.",
    ),
    min_rating: float | None = typer.Option(
        None,
        "--min-rating",
        help="Keep only ratings of at least this "
        "(e.g. 4: ratings as implicit positives).",
    ),
    as_json: bool = JSON,
) -> None:
    """Import MovieLens 100K or latest-small (ratings, titles, genres, tags, coarse user attributes, posters)."""

    ds, notes = import_movielens(
        out_ws, path, variant, posters=posters, download=download, min_rating=min_rating
    )
    images = ds.schema.image_column
    with_image = (
        f", {int((ds.items[images] != '').sum())} with an image" if images else ""
    )
    _dataset_result(
        as_json,
        ds,
        out_ws,
        notes,
        f"imported MovieLens {variant}:",
        with_image,
        "ratings",
    )


# ---------------------------------------------------------------------------------------------- encode
@app.command("encode")
@settings_options(EncodeSettings)
def encode(
    workspace: Path = WS,
    modalities: str | None = typer.Option(
        None,
        help="Comma-separated: image, text, st_text, lexical "
        "(default: image if the dataset has images, text, lexical).",
    ),
    as_json: bool = JSON,
    **settings: Any,
) -> None:
    """Encode item images and texts into content vectors (WS/features/); unchanged items are not re-encoded."""
    from graphrec.stages.encode import run_encode

    res = run_encode(workspace, _columns(modalities), EncodeSettings(**settings))
    if as_json:
        _result(
            True,
            {
                "path": str(res.path),
                "device": res.device,
                "modalities": {
                    m: dataclasses.asdict(r) for m, r in res.reports.items()
                },
            },
            lambda: None,
        )
        return
    _show_encoded(res)


def _show_encoded(res: Any) -> None:
    """The encode stage's result for people: a row per modality, then its notes and skipped items."""
    table = Table(title=Text(f"features on {res.device} -> {res.path}"))
    for col in ("modality", "dim", "encoded", "reused", "no content", "bad", "items/s"):
        table.add_column(col, justify="left" if col == "modality" else "right")
    for r in res.reports.values():
        table.add_row(
            Text(r.modality + (" *" if r.random_weights else "")),
            str(r.dim),
            str(r.encoded),
            str(r.reused),
            str(r.missing),
            str(len(r.bad)),
            f"{r.items_per_s:.0f}" if r.encoded else "-",
        )
    out.print(table)
    if any(r.random_weights for r in res.reports.values()):
        out.print(
            "[yellow]* random weights (--clip-pretrained none): for tests only, not for recommendations[/yellow]"
        )
    for r in res.reports.values():
        _notes(r.notes)
        for b in r.bad[:10]:
            _say(
                f"- {r.modality}: skipped {b['item_id']} ({b.get('file', '')}): {b['reason']}",
                "dim",
            )
        if len(r.bad) > 10:
            _say(
                f"- {r.modality}: {len(r.bad) - 10} more skipped, listed in {res.path}/logs/encode.json",
                "dim",
            )


# ---------------------------------------------------------------------------------------------- build / kg
@app.command("build")
@settings_options(BuildSettings)
def build(
    workspace: Path = WS,
    force: bool = flag(
        False, "--force", help="Rebuild even when the inputs are unchanged."
    ),
    as_json: bool = JSON,
    **settings: Any,
) -> None:
    """Build the knowledge graph (users, items, attributes, entities; training interactions only)."""
    res = run_build(workspace, force=force, **settings)
    g = res.graph
    n_edges = sum(len(e) for e in g.edges.values())

    def show() -> None:
        _notes(res.notes)
        verb = "built" if res.rebuilt else "up to date:"
        _say(
            f"{verb} {sum(g.num_nodes.values())} nodes of {len(g.num_nodes)} types, {n_edges} edges of "
            f"{len(g.edges)} relations -> {workspace}/graph"
        )

    _result(
        as_json,
        {
            "workspace": str(workspace),
            "rebuilt": res.rebuilt,
            "nodes": dict(g.num_nodes),
            "edges": n_edges,
            "relations": len(g.edges),
            "notes": res.notes,
        },
        show,
    )


@kg_app.command("stats")
def kg_stats(workspace: Path = WS, as_json: bool = JSON) -> None:
    """Node/edge counts, degrees, isolated nodes, components, cold-item reachability and the leak check."""

    stats = run_stats(workspace)
    if as_json:
        _result(True, stats, lambda: None)
        return
    _show_graph_tables(stats)
    _show_reachability(stats)
    leak = stats["leak_check"]
    if not leak["split"]:
        out.print(
            "[yellow]leak check: dataset not split (serve mode), the graph holds every interaction[/yellow]"
        )
    elif leak["ok"]:
        out.print(
            f"leak check: ok, none of {leak['held_out']} held-out interactions is an edge"
        )
    else:
        _say(
            f"leak check FAILED: {leak['leaked']} of {leak['held_out']} held-out interactions are edges, "
            f"e.g. {'; '.join(leak['examples'])}",
            "red",
        )
        raise typer.Exit(1)


def _show_graph_tables(stats: dict[str, Any]) -> None:
    """Nodes (counts, isolated, degrees) per type, and edges per relation."""
    table = Table(title="knowledge graph", show_header=True)
    for col in ("node type", "nodes", "isolated", "degree min/median/mean/max"):
        table.add_column(col)
    for t, n in stats["nodes"].items():
        d = stats["degree"].get(t)
        table.add_row(
            Text(t),
            str(n),
            str(stats["isolated"][t]),
            f"{d['min']}/{d['median']:g}/{d['mean']:g}/{d['max']}" if d else "-",
        )
    out.print(table)
    rel = Table(title="relations", show_header=True)
    rel.add_column("src | relation | dst")
    rel.add_column("edges")
    for k, n in stats["edges"].items():
        rel.add_row(Text(k), str(n))
    out.print(rel)


def _show_reachability(stats: dict[str, Any]) -> None:
    """The graph's components, and how the cold items reach warm ones."""
    c, cold = stats["components"], stats["cold_items"]
    out.print(
        f"components: {c['count']} ({c['non_trivial']} with edges), largest {c['largest']} nodes "
        f"({c['largest_share']:.1%})"
    )
    pct = lambda r: "n/a" if r["share"] is None else f"{r['count']} ({r['share']:.1%})"  # noqa: E731
    _say(
        f"cold items ({cold['definition']}): {cold['count']}; reach a warm item via attributes "
        f"{pct(cold['via_attributes'])}, entities {pct(cold['via_entities'])}, similarity "
        f"{pct(cold['via_similarity'])}, any route {pct(cold['via_any_route'])}; connected by any path "
        f"{pct(cold['connected_to_warm'])}; dead ends {cold['dead_ends']} {cold['dead_end_examples'] or ''}"
    )


@kg_app.command("explain")
def kg_explain(
    workspace: Path = WS,
    user: str = typer.Option(..., help="External user id."),
    item: str = typer.Option(..., help="External item id."),
    k: int = typer.Option(5, help="How many paths to show."),
    as_json: bool = JSON,
) -> None:
    """Why an item fits a user: the best short paths through the graph, and a one-line reason."""

    paths, text = explain_pair(workspace, user, item, k)

    def show() -> None:
        for p in paths:
            _say(f"{p.score:.3f}  {p.kind:<15} {p}")
        _say(text)

    _result(
        as_json,
        {
            "user": user,
            "item": item,
            "reason": text,
            "paths": [
                {"score": p.score, "kind": p.kind, "path": str(p)} for p in paths
            ],
        },
        show,
    )


# ---------------------------------------------------------------------------------------------- train
@app.command("train")
@settings_options(TrainSettings, RankSettings)
def train(
    workspace: Path = WS,
    resume: bool = flag(
        False, "--resume", help="Continue from the newest checkpoint in model/."
    ),
    as_json: bool = JSON,
    **settings: Any,
) -> None:
    """Train: the GNN selected on validation NDCG@K, the ranker's blend fitted on validation (the GNN block kept only
    when it adds), both refit on train+valid; model/ switched in whole."""
    from graphrec.stages.train import run_train

    train_settings = TrainSettings(**_fields_of(TrainSettings, settings))
    r = run_train(
        workspace,
        train_settings,
        resume=resume,
        ranker=RankSettings(**_fields_of(RankSettings, settings)),
    )
    emb = embeddings_path(Workspace(workspace))

    def show() -> None:
        out.print(_trained_table(r, train_settings.gnn))
        _say(f"embeddings -> {emb}")

    _result(
        as_json,
        {
            "selected_epoch": r.selected_epoch,
            "refit": r.refit,
            "gnn_served": r.gnn_served,
            "mode": r.mode,
            "validation": r.validation,
            "embeddings": str(emb),
            "epochs": len(r.history),
        },
        show,
    )


def _trained_table(r: Any, gnn: bool) -> Table:
    """The validation metrics of a training run, titled with what is served and on what it was fitted."""
    fitted_on = "every interaction" if r.mode == "serve" else "train+valid"
    served = (
        "GNN block served" + (f", refit on {fitted_on}" if r.refit else "")
        if r.gnn_served
        else "no GNN (--no-gnn): the closed-form blend"
        if not gnn
        else "GNN block not served: the closed-form blend scores as well on validation"
    )
    mode = (
        "serve mode (the dataset is not split): settings chosen on an internal validation split, the model "
        "fitted on every interaction"
        if r.mode == "serve"
        else "evaluate mode (a split dataset): fitted on train+valid, the test parts held out"
    )
    selected = f"epoch {r.selected_epoch} selected; " if gnn else ""
    table = Table(title=f"trained: {selected}{served}\n{mode}")
    table.add_column("validation")
    table.add_column("value", justify="right")
    for name, v in r.validation.items():
        table.add_row(name, f"{v:.4f}")
    return table


# ------------------------------------------------------------- evaluate / recommend / export / update / quickstart
@app.command("evaluate")
@settings_options(EvaluateSettings)
def evaluate_cmd(
    workspace: Path = WS,
    as_json: bool = JSON,
    **settings: Any,
) -> None:
    """Full-ranking metrics on the test parts (warm, cold-item, cold-user, overall) and eval/report.html."""
    from graphrec.stages.evaluate import run_evaluate

    if not settings["ks"] or min(settings["ks"]) < 1:
        raise InputError(f"--ks must be positive integers, got {settings['ks']!r}")
    d = run_evaluate(workspace, **settings)
    m = json.loads((d / "metrics.json").read_text())
    if as_json:
        _result(True, {**m, "report": str(d / "report.html")}, lambda: None)
        return
    table = Table(title="test metrics")
    mid = m["histogram_k"]
    for c in ("task", "users", f"recall@{mid}", f"ndcg@{mid}", f"coverage@{mid}"):
        table.add_column(c)
    for task, res in m["tasks"].items():
        table.add_row(
            task,
            str(res["users"]),
            f"{res['accuracy'][f'recall@{mid}']:.4f}",
            f"{res['accuracy'][f'ndcg@{mid}']:.4f}",
            f"{res['beyond'][f'@{mid}']['coverage']:.4f}",
        )
    out.print(table)
    _say(f"report: {d / 'report.html'}")


@app.command("recommend")
def recommend_cmd(
    workspace: Path = WS,
    users: str = typer.Option(
        "all", help="'all', a file of user ids (one per line), or comma-separated ids."
    ),
    k: int = typer.Option(
        DEFAULT_N,
        "--k",
        "-N",
        help="Items per user (the same default as the API and the export).",
    ),
    candidates: Path | None = typer.Option(
        None, help="File of candidate item ids, one per line."
    ),
    filter_items: str | None = typer.Option(
        None,
        help="Item ids left out of every list: a file (one per line) or "
        "comma-separated ids.",
    ),
    explain: bool = flag(False, "--explain", help="Add an explanation column."),
    out_file: Path = typer.Option(
        ...,
        "--out",
        help="Output .csv or .parquet (user_id,item_id,rank,score); "
        "'-' writes CSV to stdout.",
    ),
    approximate: bool = flag(
        False,
        "--approximate",
        help="Score every item in 256 whitened dimensions and rescore each user's "
        "best 5 x K exactly (catalogues of ~100k items and more: 1.5x faster at "
        "20M interactions, 99.5-100% of the exact top-20 in BENCHMARKS.md).",
    ),
    as_json: bool = JSON,
) -> None:
    """Top-K items per user, ranked by the exported vectors' dot product; every given interaction is excluded."""
    from graphrec.stages.recommend import csv_safe, recommend, write_recommendations

    to_stdout = str(out_file) == "-"
    if to_stdout and as_json:
        raise InputError(
            "--json prints a summary on stdout, where --out - writes the table: choose one"
        )
    if not to_stdout:
        # before the work, as write_recommendations does after
        check_output_file(out_file, "recommendations")
    spec = users if users == "all" else _file_or_ids(users)
    left_out = None if filter_items is None else _file_or_ids(filter_items)
    frame = recommend(
        workspace,
        spec,
        k,
        None if candidates is None else str(candidates),
        explain,
        progress=not to_stdout,
        approximate=approximate,
        filter_items=left_out,
    )
    if to_stdout:  # the table is the output: nothing else goes to stdout
        sys.stdout.write(csv_safe(frame).to_csv(index=False))
        return
    write_recommendations(frame, out_file)
    excluded = excluded_from_lists(Dataset.load_schema(workspace))
    _result(
        as_json,
        {
            "rows": len(frame),
            "users": int(frame["user_id"].nunique()),
            "out": str(out_file),
            "excluded": excluded,
        },
        lambda: _say(
            f"{len(frame)} recommendations for {frame['user_id'].nunique()} users -> {out_file}\n"
            f"{excluded}"
        ),
    )


@app.command("export")
@settings_options(ExportSettings)
def export_cmd(
    workspace: Path = WS,
    out_dir: Path = typer.Option(
        ...,
        "--out",
        help="Export folder to write: new, empty, or an earlier export "
        "(replaced as a whole); never a file or a folder inside a workspace.",
    ),
    salt_file: Path | None = typer.Option(
        None,
        help="Read the pseudonymisation salt from this file (first line), "
        "so it does not show in the process list.",
    ),
    as_json: bool = JSON,
    **settings: Any,
) -> None:
    """User and item vectors of the ranker's scoring space, with ids and a manifest (docs/export.md); load with
    graphrec.load_export."""
    from graphrec.stages.export import export

    pseudonymize, private = settings["pseudonymize"], settings["private"]
    if salt_file is not None:
        if pseudonymize is not None:
            raise InputError(
                "give the salt once: --pseudonymize SALT or --salt-file FILE"
            )
        if not salt_file.is_file():
            raise InputError("file not found", file=salt_file)
        pseudonymize = (salt_file.read_text(encoding="utf-8").splitlines() or [""])[0]
    d = export(workspace, out_dir, settings["formats"], pseudonymize, private=private)
    m = json.loads((d / "manifest.json").read_text())
    _result(
        as_json,
        {**m, "path": str(d)},
        lambda: _say(
            f"exported {m['users']}{' private' if m['private'] else ''} users, {m['items']} items "
            f"({m['cold_items']} cold), dim {m['dim']}, "
            f"files: {', '.join(sorted(m['files'].values()))} -> {d}"
        ),
    )


@app.command("update")
def update_cmd(
    workspace: Path = WS,
    interactions: Path | None = typer.Option(
        None, help="New interactions (user_id,item_id[,rating][,timestamp])."
    ),
    items: Path | None = typer.Option(
        None, help="New items with the dataset's item columns."
    ),
    users: Path | None = typer.Option(
        None, help="New users with the dataset's user columns."
    ),
    encoding: str = typer.Option("utf-8", help="Text encoding of CSV/TSV files."),
    as_json: bool = JSON,
) -> None:
    """Fold new items, users and interactions into a trained workspace without retraining (all or nothing)."""
    from graphrec.stages.update import run_update

    r = run_update(
        workspace, interactions, items, users, encoding=encoding, progress=not as_json
    )

    def show() -> None:
        _notes(r.notes)
        _say(
            f"added {r.items_added} items, {r.users_added} users, {r.interactions_added} interactions "
            f"({r.duplicates_skipped} repeats skipped); encoded {r.encoded or 'nothing'}; "
            f"{r.users_changed} user embeddings changed; {r.seconds['total']:.1f} s"
        )

    _result(as_json, dataclasses.asdict(r), show)


@app.command()
@settings_options(QuickstartSettings)
def quickstart(
    out_dir: Path = typer.Option(
        Path("graphrec-quickstart"),
        "--out",
        help="Folder to (re)write: the workspace goes to OUT/workspace, the export to OUT/export.",
    ),
    as_json: bool = JSON,
    **settings: Any,
) -> None:
    """Run the whole pipeline on the embedded synthetic default and print where the report and export are."""
    from graphrec.pipeline.quickstart import run_quickstart

    r = run_quickstart(
        out_dir,
        QuickstartSettings(**settings),
        say=(lambda m: None) if as_json else (lambda m: _say(m, "bold")),
    )

    def show() -> None:
        table = Table(title="test metrics @20 (model selected on validation)")
        for col in ("task", "users", "recall@20", "ndcg@20"):
            table.add_column(col)
        for task, m in r.metrics.get("tasks", {}).items():
            acc = m["accuracy"]
            table.add_row(
                task,
                str(m["users"]),
                f"{acc['recall@20']:.4f}",
                f"{acc['ndcg@20']:.4f}",
            )
        out.print(table)
        _say(f"report: {r.report}\nexport: {r.export}\nworkspace: {r.workspace}")

    _result(
        as_json,
        {
            "report": str(r.report),
            "export": str(r.export),
            "workspace": str(r.workspace),
            "metrics": r.metrics,
        },
        show,
    )


# ---------------------------------------------------------------------------------------------- main
# Failures of the machine or of its files, not of graphrec: they get one line like bad input. Any other OSError
# is a bug, and its traceback is what a report of it needs.
ENVIRONMENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ELOOP,
        errno.ENAMETOOLONG,
    }
)
# Every stage writes its files under a temp name and renames them into place (graphrec.core.io), and removes the temp
# file when the write fails: after a full disk each file is the old one or the new one, never a torn one.
FULL_HINT = "free some space and run the command again (no file was half-written)"


def _environment_error(e: OSError) -> str:
    """The one line for an OSError of ENVIRONMENT_ERRNOS: the path, what the system said, what to do."""
    hint = f"; {FULL_HINT}" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return str(InputError(f"{e.strerror}{hint}", file=e.filename))


QUIET = ("-q", "--quiet")


def hoist_quiet(args: list[str]) -> list[str]:
    """`-q` / `--quiet` typed after the command means what it means before it (Click reads it there only)."""
    if not any(a in QUIET for a in args):
        return args
    return ["--quiet", *(a for a in args if a not in QUIET)]


def main() -> None:
    """Entry point of the `graphrec` script: one-line errors and exit code 2 for bad input, a full disk or a
    denied file (see ENVIRONMENT_ERRNOS)."""
    # the stages' progress notes
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # its loader announces the CPU features it found at INFO
    logging.getLogger("faiss").setLevel(logging.WARNING)
    try:
        app(args=hoist_quiet(sys.argv[1:]), standalone_mode=False)
    except InputError as e:
        print(f"graphrec: error: {e}", file=sys.stderr)
        sys.exit(2)
    except (click.exceptions.Exit, typer.Exit) as e:
        sys.exit(e.exit_code)
    # usage errors: Click's short message, exit 2
    except (
        click.ClickException,
        _typer_click.ClickException,
    ) as e:
        e.show()
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, typer.Abort):
        print("graphrec: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("graphrec: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        env = _as_environment_error(e)
        if env is None:
            raise
        print(f"graphrec: error: {_environment_error(env)}", file=sys.stderr)
        sys.exit(2)


def _as_environment_error(e: Exception) -> OSError | None:
    """The OSError of ENVIRONMENT_ERRNOS that `e` is or carries: writers in native code report a full disk in
    their own types, with the errno only in the message (safetensors: "(os error 28)", pyarrow: "[Errno 28]")."""
    if isinstance(e, OSError) and e.errno is not None:
        return e if e.errno in ENVIRONMENT_ERRNOS else None
    code = carried_errno(e)
    return OSError(code, os.strerror(code)) if code in ENVIRONMENT_ERRNOS else None


if __name__ == "__main__":
    main()
