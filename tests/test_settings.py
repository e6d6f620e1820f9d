"""Each default is written once (graphrec.core.settings): the command line's options and the Python API's
arguments take theirs from the settings classes, so the three never disagree."""

from __future__ import annotations

import dataclasses
import inspect

import typer.main

from graphrec.app.cli import app
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
from graphrec.pipeline.api import Recommender


def _options(*command: str) -> dict[str, object]:
    cmd = typer.main.get_command(app)
    for name in command:
        cmd = cmd.commands[name]
    return {p.name: p.default for p in cmd.params}


def _defaults(*classes: type) -> dict[str, object]:
    out: dict[str, object] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out.setdefault(f.name, f.default)
    return out


def _compare(
    options: dict[str, object], defaults: dict[str, object], at_least: int = 10
) -> list[str]:
    shared = sorted(set(options) & set(defaults))
    # the comparison covers the options, not an empty intersection
    assert len(shared) >= at_least, shared
    wrong = []
    for name in shared:
        want = defaults[name]
        got = options[name]
        # a list option: comma-separated numbers, or repeated (None: none given)
        if isinstance(want, tuple):
            got = (
                ()
                if got is None
                else tuple(type(want[0])(v) for v in got.split(","))
                if isinstance(got, str)
                else tuple(got)
            )
        if got != want:
            wrong.append(f"{name}: option {got!r}, settings {want!r}")
    return wrong


def test_train_options_default_to_the_settings():
    assert not _compare(_options("train"), _defaults(TrainSettings, RankSettings))


def test_encode_options_default_to_the_settings():
    assert not _compare(_options("encode"), _defaults(EncodeSettings), at_least=8)


def test_split_options_default_to_the_settings():
    assert not _compare(_options("data", "split"), _defaults(SplitSettings), at_least=8)


def test_the_library_s_split_defaults_are_the_settings():
    from graphrec.data.splits import split_dataset

    params = inspect.signature(split_dataset).parameters
    signature = {
        name: p.default
        for name, p in params.items()
        if p.default is not inspect.Parameter.empty
    }
    assert not _compare(signature, _defaults(SplitSettings), at_least=8)


def test_the_python_api_defaults_to_the_settings():
    params = inspect.signature(Recommender.__init__).parameters
    # progress: a library is quiet unless asked (as implicit and LightFM are); the command line shows its bars
    api = {
        name: p.default
        for name, p in params.items()
        if p.default is not inspect.Parameter.empty and name != "progress"
    }
    # epochs, dim, seed, ease_dim
    assert not _compare(api, _defaults(TrainSettings, RankSettings), at_least=4)


def test_quickstart_options_default_to_the_settings():
    quickstart = _defaults(QuickstartSettings)
    assert not _compare(_options("quickstart"), quickstart, at_least=6)
    # the quickstart trains as `graphrec train` does, unless told otherwise
    assert quickstart["epochs"] == TrainSettings.epochs


def test_every_settings_field_with_help_is_an_option_of_its_command():
    for command, classes in (
        (("train",), (TrainSettings, RankSettings)),
        (("encode",), (EncodeSettings,)),
        (("data", "split"), (SplitSettings,)),
        (("quickstart",), (QuickstartSettings,)),
        (("build",), (BuildSettings,)),
        (("evaluate",), (EvaluateSettings,)),
        (("export",), (ExportSettings,)),
    ):
        options = _options(*command)
        for cls in classes:
            for f in dataclasses.fields(cls):
                assert ("help" in f.metadata) == (f.name in options) or f.name in {
                    "k",
                    "refit",
                    "gnn",
                }, (command, f.name)


def test_build_evaluate_and_export_take_their_defaults_from_the_settings():
    from graphrec.kg.build import run_build
    from graphrec.stages.evaluate import run_evaluate
    from graphrec.stages.export import export

    for command, function, cls in (
        (("build",), run_build, BuildSettings),
        (("evaluate",), run_evaluate, EvaluateSettings),
        (("export",), export, ExportSettings),
    ):
        params = inspect.signature(function).parameters
        signature = {
            name: p.default
            for name, p in params.items()
            if p.default is not inspect.Parameter.empty
        }
        defaults = _defaults(cls)
        n = len(defaults)
        assert not _compare(signature, defaults, at_least=n), function.__name__
        assert not _compare(_options(*command), defaults, at_least=n), command
