"""The `graphrec` command line: each command parses its options, calls one library function, prints.

Bad input anywhere raises graphrec.InputError; `main` turns it into one line on stderr and exit code 2.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import click
import typer
from rich.console import Console
from rich.table import Table

from graphrec.errors import InputError

app = typer.Typer(help=__doc__.splitlines()[0], no_args_is_help=True, pretty_exceptions_enable=False,
                  add_completion=False)
data_app = typer.Typer(help="Import, generate, split and inspect datasets.", no_args_is_help=True)
kg_app = typer.Typer(help="Inspect the knowledge graph.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(kg_app, name="kg")
out = Console()

WS = typer.Argument(..., help="Workspace folder (one run: dataset/, features/, graph/, model/, eval/).")


def _columns(value: Optional[str]) -> Optional[list[str]]:
    return None if value is None else [c.strip() for c in value.split(",") if c.strip()]


def _notes(notes: list[str]) -> None:
    for n in notes:
        out.print(f"[dim]- {n}[/dim]")


# ---------------------------------------------------------------------------------------------- data
@data_app.command("import")
def data_import(
    out_ws: Path = typer.Option(..., "--out", help="Workspace folder to write."),
    interactions: Optional[Path] = typer.Option(None, help="All interactions (user_id,item_id[,timestamp][,rating|weight])."),
    train: Optional[Path] = typer.Option(None, help="Pre-split: training interactions."),
    valid: Optional[Path] = typer.Option(None, help="Pre-split: validation interactions (warm)."),
    test: Optional[Path] = typer.Option(None, help="Pre-split: test interactions (warm)."),
    cold_valid: Optional[Path] = typer.Option(None, help="Pre-split: validation interactions of cold items."),
    cold_test: Optional[Path] = typer.Option(None, help="Pre-split: test interactions of cold items."),
    items: Optional[Path] = typer.Option(None, help="Items table: item_id + text, image and attribute columns."),
    users: Optional[Path] = typer.Option(None, help="Users table: user_id + coarse attribute columns."),
    images_dir: Optional[Path] = typer.Option(None, help="Folder the image column's paths are relative to."),
    text_columns: Optional[str] = typer.Option(None, help="Comma-separated text columns (default: title,name,description,text,tags present)."),
    attribute_columns: Optional[str] = typer.Option(None, help="Comma-separated categorical columns ('|' separates values)."),
    image_column: Optional[str] = typer.Option(None, help="Column holding an image path (default: image)."),
    user_attribute_columns: Optional[str] = typer.Option(None, help="Comma-separated user attribute columns."),
    encoding: str = typer.Option("utf-8", help="Text encoding of CSV files."),
) -> None:
    """Import CSV/Parquet files (one interactions file, or pre-split parts) into a workspace."""
    from data.importer import import_files

    ds, notes = import_files(out_ws, interactions=interactions and str(interactions), items=items and str(items),
                             users=users and str(users), images_dir=images_dir and str(images_dir),
                             text_columns=_columns(text_columns), attribute_columns=_columns(attribute_columns),
                             image_column=image_column, user_attribute_columns=_columns(user_attribute_columns),
                             encoding=encoding, train=train and str(train), valid=valid and str(valid),
                             test=test and str(test), cold_valid=cold_valid and str(cold_valid),
                             cold_test=cold_test and str(cold_test))
    _notes(notes)
    out.print(f"imported {ds.n_users} users, {ds.n_items} items, {len(ds.interactions)} interactions -> {out_ws}/dataset")


@data_app.command("stats")
def data_stats(workspace: Path = WS, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Counts, degree summaries, split parts and attribute cardinalities of the workspace's dataset."""
    from data.dataset import Dataset
    from data.stats import dataset_stats

    stats = dataset_stats(Dataset.load(workspace))
    if as_json:
        print(json.dumps(stats, indent=2))
        return
    table = Table(title=f"dataset {stats['name']}", show_header=False)
    for k, v in stats.items():
        table.add_row(k, json.dumps(v) if isinstance(v, (dict, list)) else str(v))
    out.print(table)


# ---------------------------------------------------------------------------------------------- data synth / data split


# ---------------------------------------------------------------------------------------------- data movielens


# ---------------------------------------------------------------------------------------------- encode


# ---------------------------------------------------------------------------------------------- build / kg


# ---------------------------------------------------------------------------------------------- train


# ---------------------------------------------------------------------------------------------- evaluate / recommend / export / update / quickstart


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    """Entry point of the `graphrec` script: one-line errors and exit code 2 for bad input."""
    try:
        app(standalone_mode=False)
    except InputError as e:
        print(f"graphrec: error: {e}", file=sys.stderr)
        sys.exit(2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        print("graphrec: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("graphrec: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
