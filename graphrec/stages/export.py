"""`graphrec export`: user and item vectors with their ids, for use without graphrec (format: docs/export.md,
layout owned by graphrec.model.export_format).

The vectors are the ranker's scoring space (graphrec.stages.rank): the dot product of an exported user vector and an
exported item vector is the score `graphrec recommend` ranks with, so serving the export (numpy, faiss) with
the user's given items excluded reproduces graphrec's lists. User vectors are computed from every interaction
the system was given at export time. Only ids and vectors leave the workspace: no user attribute, no
interaction. User ids can be replaced by a keyed hash (HMAC-SHA256 with a secret salt).

The vectors themselves do carry the users' attributes: the model embeds age band, gender, ... into each user's
GNN embedding, and a linear probe reads them back. `private=True` exports vectors that are functions of the
user's history alone (`Ranker.without_user_attributes`): they reveal what the behaviour reveals, no more.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from graphrec.core.errors import InputError
from graphrec.core.settings import ExportSettings
from graphrec.core.workspace import Workspace, reads
from graphrec.data.dataset import GIVEN, Dataset
from graphrec.model.export_format import (
    check_export_target,
    check_formats,
    pseudonymize_id,
    write_export,
)
from graphrec.stages.rank import Ranker, serving_ranker

PRIVATE_NOTE = (
    "private export: each user vector is a function of the user's interactions alone (no gnn block, "
    "which embeds user attributes, no group block); it reveals what the behaviour reveals, no more"
)
NO_ATTRIBUTES_NOTE = (
    "private export: the dataset has no user attributes, so the model never saw any and every "
    "block is kept; the vectors reveal what the behaviour reveals, no more"
)


@reads
def export(
    workspace: Workspace | str | os.PathLike,
    out: str | os.PathLike,
    formats: Sequence[str] = ExportSettings.formats,
    pseudonymize: str | None = ExportSettings.pseudonymize,
    *,
    private: bool = ExportSettings.private,
) -> Path:
    """Write the export folder `out` atomically and return it: the `graphrec export` stage.

    User and item vectors of the ranker's scoring space, with their ids and a manifest
    (docs/export.md). `out` must be new, empty or an earlier export (`check_export_target`: never a
    file, nor a folder inside a workspace). Pseudonymised user rows are sorted by pseudonym.

    Args:
        workspace: The workspace (or its folder), trained; read on one consistent state.
        out: The export folder to write (an earlier export there is replaced as a whole).
        formats: Any of parquet, npy, faiss (docs/export.md); each holds its own copy of the item
            vectors, so the default writes one.
        pseudonymize: A secret salt: user ids become HMAC-SHA256 pseudonyms. None: the ids as they
            are; an empty salt is refused.
        private: User vectors from the users' interactions alone, with no path for their attributes
            (`Ranker.without_user_attributes`): the score is the blend's less its gnn and group
            terms (so the lists are not `graphrec recommend`'s), and the manifest says
            `"private": true`. A dataset without user attributes (no demographics: the graph has no
            user-attribute edges) keeps every block: its vectors are already collaborative-only, and
            the export is the normal one, marked private.

    Returns:
        The export folder `out`.

    Raises:
        InputError: On bad input: an unknown format, an empty salt, an `out` that is a file or
            inside a workspace, a workspace without a fitted ranker, or a private export of a blend
            that scores with the gnn alone.

    Example::

        from graphrec.stages.export import export

        folder = export("ws", "export", formats=["parquet", "faiss"], private=True)
    """
    formats = check_formats(formats)
    if pseudonymize is not None and not pseudonymize:
        raise InputError("--pseudonymize needs a non-empty secret salt")
    check_export_target(out)  # before any work: the same check runs again as it writes
    ws = Workspace.of(workspace)
    ds = Dataset.load(ws)
    r, note = _export_ranker(ws, ds, private)
    user_ids, user_vectors = _user_rows(r, ds, pseudonymize)
    about = {
        "user_vectors": "from every interaction given to the system at export time",
        "private": private,
        **({"privacy": note} if note else {}),
        "model": {
            "ease_dim": int(r.ease_item.shape[1]),
            "ease_lambda": r.record.ease_lambda,
            "fitted_with": r.record.fitted_with,
            "embeddings_sha256": r.record.embeddings_sha256,
        },
        "dataset": ds.schema.name,
    }
    return write_export(
        out,
        formats,
        user_ids,
        [str(i) for i in ds.item_ids],
        r.warm,
        user_vectors,
        r.item_vectors(),
        bool(pseudonymize),
        about,
        r.fold_in(),
        r.blocks(),
    )


def _export_ranker(
    ws: Workspace, ds: Dataset, private: bool
) -> tuple[Ranker, str | None]:
    """The ranker whose vectors are exported and the manifest's privacy note: the serving ranker, or for a
    private export its blend without the blocks that carry user attributes (where the dataset has any)."""
    ranker = serving_ranker(ws, ds)
    if private and not ds.schema.user_attribute_columns:
        # the model never saw any: collaborative already
        return (
            ranker,
            NO_ATTRIBUTES_NOTE,
        )
    if not private:
        return ranker, None
    ranker = ranker.without_user_attributes()
    if not ranker.blocks():
        raise InputError(
            "the ranker's blend scores with the gnn alone, which carries user attributes: a private "
            "export would hold no scoring information",
            file=ws.path,
        )
    return ranker, PRIVATE_NOTE


def _user_rows(
    ranker: Ranker, ds: Dataset, pseudonymize: str | None
) -> tuple[list[str], np.ndarray]:
    """(user ids, user vectors from every interaction given), pseudonymised and sorted by pseudonym when a salt
    is given."""
    user_ids = [str(u) for u in ds.user_ids]
    user_vectors = ranker.user_vectors(np.arange(ds.n_users), ds.matrix(GIVEN))
    if pseudonymize:
        # rows sorted by pseudonym: in dataset order, row i would be the i-th user of the input files, and the
        # pseudonyms could be undone by position without the salt
        user_ids = [pseudonymize_id(u, pseudonymize) for u in user_ids]
        order = np.argsort(np.asarray(user_ids), kind="stable")
        user_ids, user_vectors = [user_ids[i] for i in order], user_vectors[order]
    return user_ids, user_vectors
