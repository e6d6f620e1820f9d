"""The export folder's layout (docs/export.md): writing it atomically and reading it back. It needs no torch, so
`import graphrec; graphrec.load_export(DIR)` stays light; the stage that computes the vectors is graphrec.stages.export.
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
    """The manifest's account of the user fold-in (`UserFoldIn`)."""

    short_history: int


@dataclass(frozen=True)
class Manifest(Record):
    """manifest.json (docs/export.md): what the folder holds, each file's sha256, the scoring rule, and in
    `about` the keys that describe the export for people (privacy, the model, the dataset)."""

    format: str
    version: int
    dim: int
    users: int
    items: int
    files: dict[
        str, str
    ]  # role ("ids", "users", "item_embeddings", ...) -> file name in the folder
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
    """ids.json of an export: the row order of the user and item vectors, and which items have interactions."""

    users: list[str]
    items: list[str]
    item_warm: list[int]


def faiss_module(purpose: str) -> ModuleType:
    """The faiss package, or one line saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise InputError(
            f"{purpose} needs the faiss package: pip install 'graphrec[faiss]'"
        ) from None
    return faiss


def pseudonymize_id(user_id: str, salt: str) -> str:
    """The pseudonym of a user id (by the one id rule, `normalize_id`): hex HMAC-SHA256 keyed with `salt` (stable,
    not reversible without it)."""
    return hmac.new(
        salt.encode("utf-8"), normalize_id(user_id).encode("utf-8"), hashlib.sha256
    ).hexdigest()


def check_formats(formats: Sequence[str]) -> list[str]:
    """The requested formats, normalised; one-line errors for unknown or incomplete choices."""
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
    Never a file, a symbolic link, the root of the file system, or anything inside a workspace: a command only
    replaces what it made."""
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
    """A user's vector from the item indices they have (docs/export.md, "Users the export does not hold"):

        h = rows[items].sum(0);  h[mean == 1] /= max(n, 1);  user = scale * h + const

    n = the number of distinct items; (scale, const) = terms[1], terms[2] when n > short_history, else terms[3],
    terms[4]; mean = terms[0]. Made by `graphrec.stages.rank.Ranker.fold_in`, shipped in the export."""

    rows: np.ndarray  # float32 [n_items, dim]
    terms: np.ndarray  # float32 [5, dim]: mean mask, scale and constant for long histories, then for short ones
    short_history: int

    def user_vector(self, items: np.ndarray) -> np.ndarray:
        """float32 [dim] for the item indices `items` (repeats count once)."""
        items = np.unique(np.asarray(items, np.int64))
        h = self.rows[items].sum(axis=0, dtype=np.float32)
        h = np.where(self.terms[0] > 0, h / np.float32(max(len(items), 1)), h)
        at = 1 if len(items) > self.short_history else 3
        return (self.terms[at] * h + self.terms[at + 1]).astype(np.float32)


COLLABORATIVE = (
    "ease",
    "lowpass",
)  # the blocks of the closed-form graph filter of the interactions


def taste_vector(
    fold_in: UserFoldIn, blocks: dict[str, int], item: int, warm: bool
) -> np.ndarray:
    """float32 [dim]: what the items similar to `item` are scored with (`similar_items`): the vector of a user
    whose only item it is, through the collaborative blocks alone when the item has interactions (the graph
    filter's item-item row: what the people who have it chose; title words and genres do not enter), through
    every block when it has none (its content is all there is)."""
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
    """Write the folder `out` atomically (replacing an older export; `check_export_target`): ids, vectors in
    `formats`, the user fold-in (`Export.user_vector`) as npy whatever the formats, the manifest (with the
    vectors' `blocks`; `about` adds its keys). Temp folders of a killed export there go first."""
    faiss = faiss_module("the faiss format") if "faiss" in formats else None
    out = check_export_target(out)
    remove_leftovers(out)
    with atomic_dir(out) as tmp:
        files = {"ids": "ids.json"}
        ExportIds(user_ids, item_ids, warm.astype(int).tolist()).write(tmp / "ids.json")
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
        if faiss is not None:
            index = faiss.IndexFlatIP(item.shape[1])
            index.add(np.ascontiguousarray(item, np.float32))
            faiss.write_index(index, str(tmp / "items.faiss"))
            files["faiss_items"] = "items.faiss"
        if fold_in is not None:
            files.update(
                user_fold_in="user_fold_in.npy",
                user_fold_in_terms="user_fold_in_terms.npy",
            )
            save_npy(tmp / "user_fold_in.npy", fold_in.rows)
            save_npy(tmp / "user_fold_in_terms.npy", fold_in.terms)
        Manifest(
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
            fold_in=None
            if fold_in is None
            else FoldInRecord(int(fold_in.short_history)),
            about=about,
        ).write(tmp / "manifest.json")
    return out


def _parquet(path: Path, columns: dict[str, Any], emb: np.ndarray) -> None:
    """Id columns + `embedding` as fixed_size_list<float32>[dim] (bit-exact float32 round trip)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(np.ascontiguousarray(emb, np.float32).ravel(), type=pa.float32())
    arrays = {k: pa.array(v) for k, v in columns.items()}
    arrays["embedding"] = pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])
    pq.write_table(pa.table(arrays), path)


@dataclass
class Export:
    """An export read back: ids, embeddings and the manifest; scores are dot products, as the manifest says."""

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
        self._user = {u: i for i, u in enumerate(self.user_ids)}
        self._item = {t: i for i, t in enumerate(self.item_ids)}

    def _items(self, ids: Iterable[str]) -> np.ndarray:
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
        """Lists by the dot product of the vectors shipped, under the recommend contract (graphrec.model.lists):
        `ids, scores = export.recommend(userid, user_items, N=10)`, `.to_frame()` for a table.

        An export holds no interactions, so only the caller knows what a user has: with
        `filter_already_liked_items` (the default) every user needs `user_items` (or `exclude`, the former name
        for one user's items), else the lists repeat what the user has; `filter_already_liked_items=False` keeps
        them. `recalculate_user=True`, or a user the export does not hold, computes the vector from `user_items`
        (`user_vector`)."""
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
        for s in range(
            0, len(req.users), 1024
        ):  # [users, items] scores a batch at a time
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
        """The vector a user is scored with: shipped, or from their given items (recalculated or not held)."""
        if req.filter_liked and user not in req.user_items:
            raise InputError(
                f"user {user!r}: an export holds no interactions, so pass the items the user has as "
                "user_items (or filter_already_liked_items=False to keep them in the list)"
            )
        held = user in self._user
        if req.recalculate or not held:
            if not held and not req.user_items.get(
                user
            ):  # a mistyped or pseudonymised id, not a new user
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
        """float32 [dim]: the vector of a user known by the items they have (a user the export does not hold, or a
        held one with new items), as graphrec computes it for a user its model has not seen (docs/export.md):

            h = rows[items].sum(0); h[mean] /= max(n, 1); user = scale * h + const

        with (scale, const) those for n > short_history items, else those for short histories (`UserFoldIn`)."""
        if self.fold_in is None:
            raise InputError(
                "this export has no user fold-in (written before graphrec shipped one): re-export"
            )
        return self.fold_in.user_vector(self._items(item_ids))

    def similar_items(
        self, item_id: str, k: int = DEFAULT_N
    ) -> list[tuple[str, float]]:
        """Top-k (item id, score) by taste (`taste_vector`: the list of a user whose only item is `item_id`, through
        the collaborative blocks when it has interactions), the item itself left out; graphrec's
        `Recommender.similar_items` gives the same."""
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
    """Per row of `scores`, the k best columns `keep` allows, best first, ties by column (as graphrec's own lists
    break them): column indices int64 [n, k] (-1 past the allowed ones) and their scores float32 (NaN there)."""
    masked = np.where(keep, scores, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(masked, order, axis=1)
    found = np.isfinite(values)
    return np.where(found, order, -1), np.where(found, values, np.nan).astype(
        np.float32
    )


def load_export(directory: str | os.PathLike) -> Export:
    """Read an export folder; every file must match the manifest's sha256, and hold what the manifest says."""
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
    """manifest.json, its format and version, and every file it names present with its sha256."""
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
    for name in (
        files.values()
    ):  # every file it reads is a plain name in this folder, with a checksum
        _check_file_name(name, path)
        if name not in digests:
            raise InputError(f"manifest has no sha256 for {name!r}", file=path)
    for name, digest in digests.items():
        _check_file_name(name, path)
        _check_digest(d / name, digest)
    return Manifest.from_json(raw, path, REEXPORT)


def _check_file_name(name: Any, manifest: Path) -> None:
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise InputError(
            f"manifest names a file outside the export folder: {name!r}", file=manifest
        )


def _check_digest(path: Path, digest: Any) -> None:
    """A plain file (a link could point anywhere) whose sha256 is `digest`."""
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
    """(user, item) vectors from the npy files, else from the Parquet tables."""
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
    """The user fold-in the export ships, or None (an export written before graphrec shipped one)."""
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
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:  # not an npy file, or one holding Python objects
        raise InputError(
            f"not a numeric npy array ({e}): {REEXPORT}", file=path
        ) from None
    _check_embeddings(arr.dtype, arr.shape, shape, path)
    return arr


def _read_embedding_parquet(path: Path, shape: tuple[int, int]) -> np.ndarray:
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
    """Vectors of the users or items the manifest counts, of its dimension, float32 as written."""
    if dtype != np.float32 or tuple(found) != shape:
        raise InputError(
            f"should hold float32 {list(shape)} (as manifest.json says), found {dtype} {list(found)}: "
            f"{REEXPORT}",
            file=path,
        )


def _check_finite(arr: np.ndarray, path: Path) -> np.ndarray:
    """graphrec never exports NaN or infinite values: such vectors would rank nothing (and match the manifest's
    digest only when someone rewrote both)."""
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} of {len(arr)} vectors hold NaN or infinite values (row "
            f"{int(np.flatnonzero(bad)[0])} first): {REEXPORT}",
            file=path,
        )
    return arr
