"""The export folder's layout (docs/export.md): writing it atomically and reading it back.

It needs no torch, so `import graphrec; graphrec.load_export(DIR)` stays light; the stage that
computes the vectors is graphrec.stages.export.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from graphrec.core.errors import InputError
from graphrec.core.io import (
    atomic_dir,
    file_sha256,
    read_json,
    remove_leftovers,
    save_npy,
)
from graphrec.core.records import Record, check
from graphrec.core.workspace import enclosing_workspace
from graphrec.data.readers import normalize_id
from graphrec.model.lists import DEFAULT_N, ListRequest, Recommendations, list_request

FORMATS = ("parquet", "npy", "faiss")
FORMAT_NAME, FORMAT_VERSION = "graphrec-export", 2
READABLE_VERSIONS = (1, 2)  # 1: the GNN embeddings alone (before the one scoring space)
REEXPORT = "re-run `graphrec export`"


@dataclass(frozen=True)
class FoldInRecord(Record):
    """The manifest's account of the user fold-in (`UserFoldIn`).

    Attributes:
        short_history (int): A history of at most this many distinct items is a short one
            (`UserFoldIn.short_history`).
    """

    short_history: int


@dataclass(frozen=True)
class Manifest(Record):
    """manifest.json (docs/export.md): what the folder holds, each file's sha256, the scoring rule.

    In `about`, the keys that describe the export for people (privacy, the model, the dataset).

    Attributes:
        format (str): Always `FORMAT_NAME`, "graphrec-export".
        version (int): The format version (`FORMAT_VERSION`; `READABLE_VERSIONS` are read).
        dim (int): The vectors' dimension.
        users (int): Number of user vectors (rows of the user files).
        items (int): Number of item vectors (rows of the item files).
        files (dict): Role ("ids", "users", "item_embeddings", ...) -> file name in the folder.
        sha256 (dict): File name -> its digest.
        scoring (str): How a user's vector scores an item: "dot" (the dot product).
        cold_items (int or None): Number of items without interactions.
        user_ids (str): "external" (the ids as given), or "hmac-sha256": pseudonyms
            (`pseudonymize_id`).
        blocks (dict or None): The vectors' blocks and their widths, in order.
        fold_in (FoldInRecord or None): The user fold-in's record, None where the export ships none.
        about (dict): The keys that describe the export for people; any key of manifest.json not
            named above is read into it.
    """

    format: str
    version: int
    dim: int
    users: int
    items: int
    # role ("ids", "users", "item_embeddings", ...) -> file name in the folder
    files: dict[str, str]
    sha256: dict[str, str]  # file name -> its digest
    scoring: str = "dot"
    cold_items: int | None = None
    user_ids: str = "external"  # or "hmac-sha256": pseudonyms (`pseudonymize_id`)
    blocks: dict[str, int] | None = (
        None  # the vectors' blocks and their widths, in order
    )
    fold_in: FoldInRecord | None = None
    about: dict[str, Any] = field(default_factory=dict)
    rest: ClassVar[str | None] = "about"


@dataclass(frozen=True)
class ExportIds(Record):
    """ids.json of an export: the row order of the user and item vectors, and which items have interactions.

    Attributes:
        users (list of str): The user ids, in the row order of the user vectors.
        items (list of str): The item ids, in the row order of the item vectors.
        item_warm (list of int): Per item, 1 when it has interactions, else 0.
    """

    users: list[str]
    items: list[str]
    item_warm: list[int]


def faiss_module(purpose: str) -> ModuleType:
    """The faiss package, or one line saying how to install it.

    Args:
        purpose (str): What needs faiss, as the error names it (e.g. "the faiss format").

    Returns:
        ModuleType: The imported `faiss` module.

    Raises:
        InputError: When faiss is not installed (it names `pip install 'graphrec[faiss]'`).
    """
    try:
        import faiss
    except ImportError:
        raise InputError(
            f"{purpose} needs the faiss package: pip install 'graphrec[faiss]'"
        ) from None
    return faiss


def pseudonymize_id(user_id: str, salt: str) -> str:
    """A user id's pseudonym: hex HMAC-SHA256 keyed with `salt` (stable, not reversible without it).

    The id is first normalised by the one id rule (`normalize_id`), so `7` and `"7"` get one
    pseudonym. An export written with a salt (`manifest.user_ids == "hmac-sha256"`) holds these in
    place of the user ids.

    Args:
        user_id (str): The external user id.
        salt (str): The secret key the export was written with.

    Returns:
        str: The pseudonym, 64 hex characters.

    Example::

        user = pseudonymize_id("42", salt)  # the id the export holds for user 42
        ids, scores = load_export("export/").recommend(user, {user: ["318", "296"]}, N=10)
    """
    return hmac.new(
        salt.encode("utf-8"), normalize_id(user_id).encode("utf-8"), hashlib.sha256
    ).hexdigest()


def check_formats(formats: Sequence[str]) -> list[str]:
    """The requested formats, normalised; one-line errors for unknown or incomplete choices.

    Args:
        formats (sequence of str): Format names (of `FORMATS`); case and surrounding blanks are
            ignored, repeats and empty names dropped.

    Returns:
        list of str: The formats, lower-case, each once, in the order given.

    Raises:
        InputError: On an unknown format, no format, faiss alone (it holds only the item index:
            parquet or npy must come with it for the embeddings and ids), or faiss without the faiss
            package.
    """
    formats = list(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InputError(
            f"unknown export format {bad[0]!r} (choose from {', '.join(FORMATS)})"
            if bad
            else "no export format given"
        )
    if "faiss" in formats and (len(formats) == 1):
        raise InputError(
            "the faiss format holds only the item index: add parquet or npy for the embeddings and ids"
        )
    if "faiss" in formats:
        faiss_module("the faiss format")
    return formats


def check_export_target(out: str | os.PathLike) -> Path:
    """`out` when export may write it: absent, an empty folder, or an export graphrec wrote (replaced whole).

    Never a file, a symbolic link, the root of the file system, or anything inside a workspace: a
    command only replaces what it made.

    Args:
        out (str or os.PathLike): The export folder to write.

    Returns:
        Path: `out` as a Path.

    Raises:
        InputError: When `out` is none of the above (the message starts with `--out`).
    """
    out = Path(out)
    real = Path(os.path.realpath(out))
    ws = enclosing_workspace(out)
    problem = (
        "is the root of the file system"
        if real.parent == real
        else f"lies inside the workspace {ws}: export to a folder outside it"
        if ws is not None
        else "is a symbolic link: name the folder itself"
        if out.is_symlink()
        else "exists and is not a folder"
        if out.exists() and not out.is_dir()
        else None
    )
    if problem is None and out.is_dir() and any(out.iterdir()) and not _is_export(out):
        problem = (
            "exists and is not a graphrec export (no manifest.json of format graphrec-export): choose a new "
            "or empty folder, or remove it yourself"
        )
    if problem:
        raise InputError(f"--out {problem}", file=out)
    return out


def _is_export(d: Path) -> bool:
    """Whether `d` holds a manifest.json (a plain file, not a link) of format graphrec-export."""
    manifest = d / "manifest.json"
    try:
        return (
            not manifest.is_symlink()
            and read_json(manifest).get("format") == FORMAT_NAME
        )
    except (InputError, AttributeError):
        return False


@dataclass(frozen=True)
class UserFoldIn:
    """A user's vector from the item indices they have.

    As docs/export.md, "Users the export does not hold", writes it::

        h = rows[items].sum(0);  h[mean == 1] /= max(n, 1);  user = scale * h + const

    n = the number of distinct items; (scale, const) = terms[1], terms[2] when n > short_history,
    else terms[3], terms[4]; mean = terms[0]. Made by `graphrec.stages.rank.Ranker.fold_in`, shipped
    in the export.

    Attributes:
        rows (np.ndarray): float32 [n_items, dim]: each item's row.
        terms (np.ndarray): float32 [5, dim]: the mean mask, the scale and constant for long
            histories, then those for short ones.
        short_history (int): A history of at most this many distinct items takes the short-history
            terms.
    """

    rows: np.ndarray  # float32 [n_items, dim]
    terms: np.ndarray  # float32 [5, dim]: mean mask, scale and constant for long histories, then for short ones
    short_history: int

    def user_vector(self, items: np.ndarray) -> np.ndarray:
        """The vector of a user who has the items `items`.

        Args:
            items (np.ndarray): Item indices (rows of `rows`); repeats count once.

        Returns:
            np.ndarray: float32 [dim].
        """
        items = np.unique(np.asarray(items, np.int64))
        h = self.rows[items].sum(axis=0, dtype=np.float32)
        h = np.where(self.terms[0] > 0, h / np.float32(max(len(items), 1)), h)
        at = 1 if len(items) > self.short_history else 3
        return (self.terms[at] * h + self.terms[at + 1]).astype(np.float32)


# the blocks of the closed-form graph filter of the interactions
COLLABORATIVE = (
    "ease",
    "lowpass",
)


def taste_vector(
    fold_in: UserFoldIn, blocks: dict[str, int], item: int, warm: bool
) -> np.ndarray:
    """The vector `similar_items` scores the items similar to `item` with: a user's whose only item it is.

    Read through the collaborative blocks (`COLLABORATIVE`) alone when the item has interactions
    (the graph filter's item-item row: what the people who have it chose; title words and genres do
    not enter), through every block when it has none (its content is all there is).

    Args:
        fold_in (UserFoldIn): The user fold-in.
        blocks (dict): The vectors' blocks and their widths, in order (`Manifest.blocks`); empty:
            every dimension is used.
        item (int): The item's index.
        warm (bool): Whether the item has interactions.

    Returns:
        np.ndarray: float32 [dim]; for a warm item, zero outside the collaborative blocks (where
            there are any).
    """
    v = fold_in.user_vector(np.array([item]))
    keep = (
        np.concatenate([np.full(w, b in COLLABORATIVE) for b, w in blocks.items()])
        if blocks
        else np.zeros(0, bool)
    )
    return np.where(keep, v, np.float32(0)) if warm and keep.any() else v


def write_export(
    out: str | os.PathLike,
    formats: Sequence[str],
    user_ids: list[str],
    item_ids: list[str],
    warm: np.ndarray,
    user: np.ndarray,
    item: np.ndarray,
    pseudonymized: bool,
    about: dict[str, Any],
    fold_in: UserFoldIn | None = None,
    blocks: dict[str, int] | None = None,
) -> Path:
    """Write the export folder `out` atomically, replacing an older export (`check_export_target`).

    The folder holds the ids, the vectors in `formats`, the user fold-in (`Export.user_vector`) as
    npy whatever the formats, and the manifest (with the vectors' `blocks`; `about` adds its keys).
    Temp folders of a killed export there go first.

    Args:
        out (str or os.PathLike): The export folder.
        formats (sequence of str): Formats of the vectors, checked (`check_formats`): "parquet",
            "npy", "faiss" (the item index).
        user_ids (list of str): The user ids (pseudonyms where `pseudonymized`), in the rows' order
            of `user`.
        item_ids (list of str): The item ids, in the rows' order of `item`.
        warm (np.ndarray): bool [n_items]: which items have interactions.
        user (np.ndarray): float32 [n_users, dim]: the user vectors.
        item (np.ndarray): float32 [n_items, dim]: the item vectors.
        pseudonymized (bool): Whether `user_ids` are pseudonyms (`pseudonymize_id`): the manifest's
            `user_ids` is then "hmac-sha256", else "external".
        about (dict): Keys the manifest adds to describe the export for people (privacy, the model,
            the dataset).
        fold_in (UserFoldIn, optional): The user fold-in to ship; None ships none. (default:
            :obj:`None`)
        blocks (dict, optional): The vectors' blocks and their widths, in order. (default:
            :obj:`None`)

    Returns:
        Path: The export folder.

    Raises:
        InputError: When `out` may not be written (`check_export_target`), or "faiss" is asked for
            without the faiss package.
    """
    faiss = faiss_module("the faiss format") if "faiss" in formats else None
    out = check_export_target(out)
    remove_leftovers(out)
    with atomic_dir(out) as tmp:
        files = {"ids": "ids.json"}
        ExportIds(user_ids, item_ids, warm.astype(int).tolist()).write(tmp / "ids.json")
        files.update(_write_vectors(tmp, formats, user_ids, item_ids, warm, user, item))
        if faiss is not None:
            files.update(_write_faiss_index(tmp, faiss, item))
        if fold_in is not None:
            files.update(_write_fold_in(tmp, fold_in))
        _manifest(
            tmp,
            files,
            user_ids,
            item_ids,
            warm,
            item,
            pseudonymized,
            about,
            fold_in,
            blocks,
        ).write(tmp / "manifest.json")
    return out


def _write_vectors(
    tmp: Path,
    formats: Sequence[str],
    user_ids: list[str],
    item_ids: list[str],
    warm: np.ndarray,
    user: np.ndarray,
    item: np.ndarray,
) -> dict[str, str]:
    """Write the user and item vectors as npy arrays and / or Parquet tables, as `formats` asks.

    Returns:
        dict: The manifest's `files` entries (role -> file name) of what was written.
    """
    files: dict[str, str] = {}
    if "npy" in formats:
        files.update(
            user_embeddings="user_embeddings.npy",
            item_embeddings="item_embeddings.npy",
        )
        save_npy(tmp / "user_embeddings.npy", user)
        save_npy(tmp / "item_embeddings.npy", item)
    if "parquet" in formats:
        files.update(users="users.parquet", items="items.parquet")
        _parquet(tmp / "users.parquet", {"user_id": user_ids}, user)
        _parquet(tmp / "items.parquet", {"item_id": item_ids, "warm": warm}, item)
    return files


def _write_faiss_index(
    tmp: Path, faiss: ModuleType, item: np.ndarray
) -> dict[str, str]:
    """Write items.faiss: an exact inner-product index (IndexFlatIP) of the item vectors.

    Returns:
        dict: The manifest's `files` entry for it.
    """
    index = faiss.IndexFlatIP(item.shape[1])
    index.add(np.ascontiguousarray(item, np.float32))
    faiss.write_index(index, str(tmp / "items.faiss"))
    return {"faiss_items": "items.faiss"}


def _write_fold_in(tmp: Path, fold_in: UserFoldIn) -> dict[str, str]:
    """Write the user fold-in's rows and terms as npy arrays (whatever the formats).

    Returns:
        dict: The manifest's `files` entries for them.
    """
    save_npy(tmp / "user_fold_in.npy", fold_in.rows)
    save_npy(tmp / "user_fold_in_terms.npy", fold_in.terms)
    return {
        "user_fold_in": "user_fold_in.npy",
        "user_fold_in_terms": "user_fold_in_terms.npy",
    }


def _manifest(
    tmp: Path,
    files: dict[str, str],
    user_ids: list[str],
    item_ids: list[str],
    warm: np.ndarray,
    item: np.ndarray,
    pseudonymized: bool,
    about: dict[str, Any],
    fold_in: UserFoldIn | None,
    blocks: dict[str, int] | None,
) -> Manifest:
    """The manifest of the files written in `tmp`, with each one's sha256.

    The arguments are `write_export`'s.
    """
    return Manifest(
        format=FORMAT_NAME,
        version=FORMAT_VERSION,
        dim=int(item.shape[1]),
        users=len(user_ids),
        items=len(item_ids),
        files=files,
        sha256={f: file_sha256(tmp / f) for f in files.values()},
        cold_items=int((~warm).sum()),
        user_ids="hmac-sha256" if pseudonymized else "external",
        blocks=blocks,
        fold_in=None if fold_in is None else FoldInRecord(int(fold_in.short_history)),
        about=about,
    )


def _parquet(path: Path, columns: dict[str, Any], emb: np.ndarray) -> None:
    """Write a Parquet table: the id `columns`, then `embedding` as fixed_size_list<float32>[dim].

    The float32 values round-trip bit-exact.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(np.ascontiguousarray(emb, np.float32).ravel(), type=pa.float32())
    arrays = {k: pa.array(v) for k, v in columns.items()}
    arrays["embedding"] = pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])
    pq.write_table(pa.table(arrays), path)


@dataclass
class Export:
    """An export read back: ids, embeddings and the manifest; scores are dot products, as the manifest says.

    Made by `load_export`. It holds no interactions: the items a user has are the caller's to give.

    Attributes:
        manifest (Manifest): The export's manifest.json.
        user_ids (list of str): The user ids (pseudonyms where
            `manifest.user_ids == "hmac-sha256"`), in the rows' order of `user_embeddings`.
        item_ids (list of str): The item ids, in the rows' order of `item_embeddings`.
        item_warm (np.ndarray): bool [n_items]: which items have interactions.
        user_embeddings (np.ndarray): float32 [n_users, dim].
        item_embeddings (np.ndarray): float32 [n_items, dim].
        fold_in (UserFoldIn or None): The user fold-in (`user_vector`); None: an export written
            before graphrec shipped one.

    Example::

        exp = load_export("export/")
        ids, scores = exp.recommend("42", {"42": ["318", "296"]}, N=10)
    """

    manifest: Manifest
    user_ids: list[str]
    item_ids: list[str]
    item_warm: np.ndarray  # bool [n_items]
    user_embeddings: np.ndarray  # float32 [n_users, dim]
    item_embeddings: np.ndarray  # float32 [n_items, dim]
    fold_in: UserFoldIn | None = (
        None  # None: an export written before graphrec shipped one
    )

    def __post_init__(self) -> None:
        """Index the user and item ids by their rows."""
        self._user = {u: i for i, u in enumerate(self.user_ids)}
        self._item = {t: i for i, t in enumerate(self.item_ids)}

    def _items(self, ids: Iterable[str]) -> np.ndarray:
        """The rows of the item ids `ids` (normalised by `normalize_id`).

        Raises:
            InputError: Naming the first id the export does not hold.
        """
        ids = [normalize_id(i) for i in ids]
        missing = [i for i in ids if i not in self._item]
        if missing:
            raise InputError(f"unknown item id {missing[0]!r} (not in the export)")
        return np.asarray([self._item[i] for i in ids], np.int64)

    def recommend(
        self,
        userid: Any,
        user_items: Any = None,
        N: int = DEFAULT_N,  # noqa: N803 (implicit's name)
        filter_already_liked_items: bool = True,
        filter_items: Any = None,
        recalculate_user: bool = False,
        items: Any = None,
        **aliases: Any,
    ) -> Recommendations:
        """Top-N items per user by the dot product of the shipped vectors, under the recommend contract.

        The contract is graphrec.model.lists's, shared with `graphrec.Recommender.recommend`:
        `ids, scores = export.recommend(userid, user_items, N=10)`, `.to_frame()` for a table.

        An export holds no interactions, so only the caller knows what a user has: with
        `filter_already_liked_items` (the default) every user needs `user_items` (or `exclude`, the
        former name for one user's items), else the lists repeat what the user has;
        `filter_already_liked_items=False` keeps them. `recalculate_user=True`, or a user the export
        does not hold, computes the vector from `user_items` (`user_vector`).

        Args:
            userid (str, int or sequence): External user id(s) (ids are text: `7` means `"7"`;
                pseudonyms where the export holds them, `pseudonymize_id`); one id gives 1-D arrays,
                a sequence one row per user.
            user_items (Mapping or scipy sparse, optional): The items users have: user id -> item
                ids, or one sparse row per user of `userid` over the items in `item_ids` order
                (implicit's form). Left out of the lists; a user the export does not hold, or any
                user with `recalculate_user`, is scored from them. (default: :obj:`None`)
            N (int, optional): Items per user (`k`, the former name, is accepted). (default:
                :obj:`10`)
            filter_already_liked_items (bool, optional): Leave out the items `user_items` gives;
                every user then needs them (`filter_already_liked`, the former name, is accepted).
                (default: :obj:`True`)
            filter_items (sequence, optional): Item ids left out of every list. (default:
                :obj:`None`)
            recalculate_user (bool, optional): Score a held user from `user_items` (`user_vector`)
                instead of the vector shipped. (default: :obj:`False`)
            items (sequence, optional): Item ids to rank among (`candidates`, the former name, is
                accepted). (default: :obj:`None`: every item)
            **aliases: graphrec's former argument names (`k`, `filter_already_liked`, `candidates`),
                and `exclude`: the items of the one user `userid` names, in place of `user_items`.

        Returns:
            Recommendations: Item ids and float32 scores, best first, [n_users, N] (1-D for one user
            id; a row with fewer items left than N is padded with None and NaN).

        Raises:
            InputError: On an unknown item id, a user without `user_items` while
                `filter_already_liked_items` is on, an unknown user id without `user_items` (a
                mistyped or pseudonymised id, not a new user), `exclude` together with `user_items`
                or for several users, or the arguments the contract refuses (`list_request`).

        Example::

            exp = load_export("export/")
            ids, scores = exp.recommend("42", {"42": ["318", "296"]}, N=10)  # 42 has these
            table = exp.recommend(["42", "7"], {"42": ["318"], "7": ["296"]}, N=5).to_frame()
        """
        if "exclude" in aliases:  # the former way to pass one user's items
            if user_items is not None or not isinstance(userid, (str, int, np.integer)):
                raise InputError(
                    "exclude names one user's items: give it or user_items, for one user id"
                )
            user_items = {userid: aliases.pop("exclude")}
        req = list_request(
            userid,
            user_items,
            N,
            filter_already_liked_items,
            filter_items,
            recalculate_user,
            items,
            item_ids=self.item_ids,
            aliases=aliases,
        )
        vectors = np.stack([self._user_row(req, u) for u in req.users])
        allowed = np.ones(len(self.item_ids), bool)
        if req.items is not None:
            allowed[:] = False
            allowed[self._items(req.items)] = True
        allowed[self._items(req.filter_items)] = False
        width = min(req.n, int(allowed.sum()))
        top = np.full((len(req.users), width), -1, np.int64)
        best = np.full((len(req.users), width), np.nan, np.float32)
        # [users, items] scores a batch at a time
        for s in range(0, len(req.users), 1024):
            users = req.users[s : s + 1024]
            keep = np.repeat(allowed[None], len(users), axis=0)
            if req.filter_liked:  # what each user has (given: an export holds none)
                for row, user in enumerate(users):
                    keep[row, self._items(req.user_items[user])] = False
            top[s : s + 1024], best[s : s + 1024] = _best(
                vectors[s : s + 1024] @ self.item_embeddings.T, keep, width
            )
        return Recommendations.of(req, self.item_ids, top, best)

    def _user_row(self, req: ListRequest, user: str) -> np.ndarray:
        """The vector a user is scored with: shipped, or from their given items.

        From their items when the request recalculates users or the export does not hold the user.

        Raises:
            InputError: For a user without given items while `req.filter_liked` is on, or a user the
                export does not hold given no items (a mistyped or pseudonymised id, not a new
                user).
        """
        if req.filter_liked and user not in req.user_items:
            raise InputError(
                f"user {user!r}: an export holds no interactions, so pass the items the user has as "
                "user_items (or filter_already_liked_items=False to keep them in the list)"
            )
        held = user in self._user
        if req.recalculate or not held:
            # a mistyped or pseudonymised id, not a new user
            if not held and not req.user_items.get(user):
                hint = (
                    " (this export holds pseudonyms: pass pseudonymize_id(user_id, salt))"
                    if self.manifest.user_ids == "hmac-sha256"
                    else ""
                )
                raise InputError(
                    f"unknown user id {user!r}{hint}: pass the items they have as user_items"
                )
            return self.user_vector(req.user_items[user])
        return self.user_embeddings[self._user[user]]

    def user_vector(self, item_ids: Iterable[str]) -> np.ndarray:
        """The vector of a user known by the items they have.

        For a user the export does not hold, or a held one with new items, as graphrec computes it
        for a user its model has not seen (docs/export.md)::

            h = rows[items].sum(0); h[mean] /= max(n, 1); user = scale * h + const

        with (scale, const) those for n > short_history items, else those for short histories
        (`UserFoldIn`).

        Args:
            item_ids (iterable of str): The item ids the user has (repeats count once).

        Returns:
            np.ndarray: float32 [dim]; its dot product with `item_embeddings` scores the items.

        Raises:
            InputError: On an unknown item id, or an export without a user fold-in (written before
                graphrec shipped one: re-export).

        Example::

            exp = load_export("export/")
            v = exp.user_vector(["318", "296", "2571"])  # a user the export does not hold
            scores = exp.item_embeddings @ v
        """
        if self.fold_in is None:
            raise InputError(
                "this export has no user fold-in (written before graphrec shipped one): re-export"
            )
        return self.fold_in.user_vector(self._items(item_ids))

    def similar_items(
        self, item_id: str, k: int = DEFAULT_N
    ) -> list[tuple[str, float]]:
        """Top-k (item id, score) by taste, the item itself left out.

        The list of a user whose only item is `item_id` (`taste_vector`), through the collaborative
        blocks when it has interactions; graphrec's `Recommender.similar_items` gives the same.

        Args:
            item_id (str): The item.
            k (int, optional): How many items. (default: :obj:`10`)

        Returns:
            list of (str, float): (item id, score) pairs, best first; fewer than `k` when fewer
                items are left.

        Raises:
            InputError: On an unknown item id, or an export without a user fold-in (written before
                graphrec shipped one: re-export).

        Example::

            exp = load_export("export/")
            for item_id, score in exp.similar_items("318", k=10):
                print(item_id, score)
        """
        if self.fold_in is None:
            raise InputError(
                "this export has no user fold-in (written before graphrec shipped one): re-export"
            )
        i = self._items([item_id])
        v = taste_vector(
            self.fold_in,
            self.manifest.blocks or {},
            int(i[0]),
            bool(self.item_warm[i[0]]),
        )
        keep = np.ones((1, len(self.item_ids)), bool)
        keep[0, i] = False  # not similar to itself: the same item
        top, scores = _best((self.item_embeddings @ v)[None], keep, k)
        return [
            (self.item_ids[j], float(sc)) for j, sc in zip(top[0], scores[0]) if j >= 0
        ]


def _best(
    scores: np.ndarray, keep: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `scores`, the k best columns `keep` allows, best first, ties by column.

    Ties break by column, as graphrec's own lists break them.

    Returns:
        tuple: Column indices int64 [n, k] (-1 past the allowed ones) and their scores float32 (NaN
            there).
    """
    masked = np.where(keep, scores, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(masked, order, axis=1)
    found = np.isfinite(values)
    return np.where(found, order, -1), np.where(found, values, np.nan).astype(
        np.float32
    )


def load_export(directory: str | os.PathLike) -> Export:
    """Read an export folder; every file must match the manifest's sha256, and hold what the manifest says.

    Symbolic links, files outside the folder, and NaN or infinite vectors are refused. The vectors
    come from the npy files, else from the Parquet tables.

    Args:
        directory (str or os.PathLike): The folder `graphrec export` wrote.

    Returns:
        Export: The ids, vectors, user fold-in and manifest.

    Raises:
        InputError: When the folder is not a readable export: a missing, damaged or edited file
            (each error names the file, and most say to re-run `graphrec export`).

    Example::

        exp = load_export("export/")
        ids, scores = exp.recommend("42", {"42": ["318", "296"]}, N=10)  # what 42 already has
        exp.similar_items("318", k=10)
        v = exp.user_vector(["318", "296", "2571"])  # a user the export does not hold
    """
    d = Path(directory)
    manifest = _read_manifest(d)
    ids = ExportIds.read(d / manifest.files["ids"], REEXPORT)
    _check_id_counts(ids, manifest, d / manifest.files["ids"])
    user, item = _read_vectors(d, manifest)
    return Export(
        manifest,
        ids.users,
        ids.items,
        np.asarray(ids.item_warm, bool),
        user,
        item,
        _read_fold_in(d, manifest),
    )


def _read_manifest(d: Path) -> Manifest:
    """manifest.json, checked: format, version, and every file it names present with its sha256.

    Raises:
        InputError: On a symbolic link, another format or version, missing `files` / `sha256` maps,
            a file name outside the folder, a file without its sha256, a missing file, or one that
            does not match it.
    """
    path = d / "manifest.json"
    if path.is_symlink():
        raise InputError(
            "is a symbolic link; an export holds plain files only", file=path
        )
    raw = check(read_json(path), dict[str, Any], path, REEXPORT)
    if raw.get("format") != FORMAT_NAME or raw.get("version") not in READABLE_VERSIONS:
        versions = " or ".join(map(str, READABLE_VERSIONS))
        raise InputError(
            f"not a {FORMAT_NAME} manifest of version {versions}", file=path
        )
    files, digests = raw.get("files"), raw.get("sha256")
    if (
        not isinstance(files, dict)
        or not isinstance(digests, dict)
        or "ids" not in files
    ):
        raise InputError("manifest lacks its 'files' / 'sha256' maps", file=path)
    # every file it reads is a plain name in this folder, with a checksum
    for name in files.values():
        _check_file_name(name, path)
        if name not in digests:
            raise InputError(f"manifest has no sha256 for {name!r}", file=path)
    for name, digest in digests.items():
        _check_file_name(name, path)
        _check_digest(d / name, digest)
    return Manifest.from_json(raw, path, REEXPORT)


def _check_file_name(name: Any, manifest: Path) -> None:
    """Refuse (InputError) a manifest's file name that is not a plain name in the export folder."""
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise InputError(
            f"manifest names a file outside the export folder: {name!r}", file=manifest
        )


def _check_digest(path: Path, digest: Any) -> None:
    """Check that `path` is a plain file (a link could point anywhere) whose sha256 is `digest`.

    Raises:
        InputError: When it is a symbolic link, missing, or of another sha256 (damaged or edited).
    """
    if path.is_symlink():
        raise InputError(
            "is a symbolic link; an export holds plain files only", file=path
        )
    if not path.is_file():
        raise InputError("file listed in the manifest is missing", file=path)
    if file_sha256(path) != digest:
        raise InputError(
            "file does not match its sha256 in the manifest (damaged or edited)",
            file=path,
        )


def _check_id_counts(ids: ExportIds, manifest: Manifest, path: Path) -> None:
    """Refuse (InputError) an ids.json whose lists do not hold the manifest's user and item counts."""
    for key, found, n in (
        ("users", ids.users, manifest.users),
        ("items", ids.items, manifest.items),
        ("item_warm", ids.item_warm, manifest.items),
    ):
        if len(found) != n:
            raise InputError(
                f"'{key}' holds {len(found)} entries, manifest.json says {n}: {REEXPORT}",
                file=path,
            )


def _read_vectors(d: Path, manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) vectors from the npy files, else from the Parquet tables.

    Both are checked: finite, and of the manifest's shape, float32.

    Raises:
        InputError: When the export holds neither, or the vectors are not what the manifest says.
    """
    files = manifest.files
    if "user_embeddings" in files:
        read = _read_npy
        paths = d / files["user_embeddings"], d / files["item_embeddings"]
    elif "users" in files:
        read = _read_embedding_parquet
        paths = d / files["users"], d / files["items"]
    else:
        raise InputError(
            "export holds no embeddings (npy or parquet)", file=d / "manifest.json"
        )
    user, item = (
        _check_finite(read(path, (n, manifest.dim)), path)
        for path, n in zip(paths, (manifest.users, manifest.items))
    )
    return user, item


def _read_fold_in(d: Path, manifest: Manifest) -> UserFoldIn | None:
    """The user fold-in the export ships, or None (an export written before graphrec shipped one).

    Raises:
        InputError: When the manifest lacks its `fold_in` record or valid `blocks` (widths adding up
            to dim), or the arrays are not what the manifest says.
    """
    files = manifest.files
    if "user_fold_in" not in files:
        return None
    if manifest.fold_in is None:
        raise InputError(
            f"'fold_in' should be {{\"short_history\": int}}: {REEXPORT}",
            file=d / "manifest.json",
        )
    blocks = manifest.blocks
    if (
        blocks is None
        or min(blocks.values(), default=0) < 0
        or sum(blocks.values()) != manifest.dim
    ):
        raise InputError(
            f"'blocks' should map block names to widths adding up to dim {manifest.dim}: {REEXPORT}",
            file=d / "manifest.json",
        )
    rows, terms = (
        _check_finite(_read_npy(d / files[key], shape), d / files[key])
        for key, shape in (
            ("user_fold_in", (manifest.items, manifest.dim)),
            ("user_fold_in_terms", (5, manifest.dim)),
        )
    )
    return UserFoldIn(rows, terms, manifest.fold_in.short_history)


def _read_npy(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A float32 npy array of `shape` (no pickled objects), else an InputError."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:  # not an npy file, or one holding Python objects
        raise InputError(
            f"not a numeric npy array ({e}): {REEXPORT}", file=path
        ) from None
    _check_embeddings(arr.dtype, arr.shape, shape, path)
    return arr


def _read_embedding_parquet(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The `embedding` column of a Parquet table as float32 `shape`.

    Raises:
        InputError: When the table is unreadable, or the column is missing, not
            fixed_size_list<float32>, or not of `shape`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise InputError(
            f"not a readable Parquet table ({e}): {REEXPORT}", file=path
        ) from None
    kind = (
        table.schema.field("embedding").type
        if "embedding" in table.schema.names
        else None
    )
    if (
        kind is None
        or not pa.types.is_fixed_size_list(kind)
        or kind.value_type != pa.float32()
    ):
        raise InputError(
            f"should be fixed_size_list<float32>[{shape[1]}], found {kind or 'none'}: {REEXPORT}",
            file=path,
            column="embedding",
        )
    col = table.column("embedding").combine_chunks()
    _check_embeddings(np.dtype(np.float32), (len(col), kind.list_size), shape, path)
    return col.values.to_numpy(zero_copy_only=False).reshape(shape)


def _check_embeddings(
    dtype: np.dtype, found: tuple[int, ...], shape: tuple[int, int], path: Path
) -> None:
    """Check vectors: of the users or items the manifest counts and its dimension, float32 as written.

    Raises:
        InputError: Naming the dtype and shape found against those expected.
    """
    if dtype != np.float32 or tuple(found) != shape:
        raise InputError(
            f"should hold float32 {list(shape)} (as manifest.json says), found {dtype} {list(found)}: "
            f"{REEXPORT}",
            file=path,
        )


def _check_finite(arr: np.ndarray, path: Path) -> np.ndarray:
    """`arr` when every vector is finite: graphrec never exports NaN or infinite values.

    Such vectors would rank nothing (and match the manifest's digest only when someone rewrote
    both).

    Raises:
        InputError: Naming how many vectors hold NaN or infinite values, and the first one's row.
    """
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} of {len(arr)} vectors hold NaN or infinite values (row "
            f"{int(np.flatnonzero(bad)[0])} first): {REEXPORT}",
            file=path,
        )
    return arr
