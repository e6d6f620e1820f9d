"""A Python API in the manner of implicit and LightFM.

`Recommender.fit / recommend / similar_items / partial_fit` run the same stage functions as the
command line, in the same order (`graphrec data import` or `data split`, `encode`, `build`, `train`
with its ranker fit, `recommend`, `update`, `evaluate`), on a workspace folder, so a model made here
is a workspace the CLI can read and the other way round. Data frames are written as Parquet files
under `WS/inputs/` and read back by the importer, so they pass exactly the checks a CLI import does
(docs/data-format.md). Serving state (the ranker, the dataset's id maps and the history matrix) is
loaded once and kept on the object until the next `fit` or `partial_fit`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
import torch

from graphrec.core.errors import InputError
from graphrec.core.io import atomic_dir, write_parquet
from graphrec.core.settings import EASE_DIM, RankSettings
from graphrec.core.workspace import LOCK, Workspace
from graphrec.data.dataset import GIVEN, Dataset
from graphrec.data.importer import import_files
from graphrec.data.splits import run_split
from graphrec.kg.build import run_build
from graphrec.model.export_format import UserFoldIn, taste_vector
from graphrec.model.gnn import TrainedModel
from graphrec.model.lists import (
    DEFAULT_N,
    ListRequest,
    Recommendations,
    external_ids,
    list_request,
)
from graphrec.stages.encode import run_encode
from graphrec.stages.evaluate import evaluate
from graphrec.stages.rank import Ranker, serving_ranker, topk_stable
from graphrec.stages.train import TrainSettings, load_model, run_train
from graphrec.stages.update import UpdateResult, run_update

log = logging.getLogger(__name__)

Id = str | int
Ids = Id | Sequence[Id]
INPUTS = "inputs"  # WS/inputs/: the frames handed to fit / partial_fit, as the files the stages read


@dataclass
class _Served:
    """What recommend / similar_items need, loaded from the workspace once."""

    dataset: Dataset
    ranker: Ranker
    # every interaction the system was given (what the CLI excludes)
    history: sp.csr_matrix
    users: pd.Index  # external user id -> user index
    items: pd.Index  # external item id -> item index
    model: TrainedModel | None = (
        None  # loaded on the first user known only by `user_items`
    )
    taste: tuple[UserFoldIn, np.ndarray] | None = (
        None  # the user fold-in and the item vectors, for similar_items
    )
    item_list: list[str] | None = (
        None  # the external item ids as a list (Recommender.item_ids)
    )


class Recommender:
    """A multimodal knowledge-graph recommender over a workspace folder.

    It has the API of implicit / LightFM: :meth:`fit`, :meth:`recommend`, :meth:`similar_items`,
    :meth:`partial_fit`, :meth:`evaluate`, :meth:`save` and :meth:`load`.

    Args:
        workspace (str or os.PathLike, optional): The workspace folder the model lives in (it *is*
            the saved model: dataset/, features/, graph/, model/). :obj:`None` makes a temporary
            folder owned by this object and deleted with it (when it is garbage-collected or the
            interpreter exits); call :meth:`save` to keep it. (default: :obj:`None`)
        modalities (tuple of str, optional): Content encoders `fit` runs on the items table, as
            `graphrec encode --modalities` (e.g. :obj:`("lexical", "clip_image", "clip_text")` where
            CLIP weights can be had). An empty tuple skips encoding. (default: :obj:`("lexical",)`)
        epochs (int, optional): Maximum training epochs (early stopping on validation).
            (default: :obj:`60`, as `graphrec train`)
        dim (int, optional): Embedding dimension of the graph model. (default: :obj:`64`)
        seed (int, optional): Seed of the split, the encoders and training. (default: :obj:`0`)
        progress (bool, optional): Show the stages' progress bars. (default: :obj:`False`)
        ease_dim (int, optional): Dimensions of the ranker's low-rank EASE block, as
            `graphrec train --ease-dim`. (default: :obj:`1024`)
        encode_settings (Mapping, optional): More keywords of
            :func:`graphrec.stages.encode.run_encode` (`clip_pretrained`, `clip_checkpoint`,
            `lexical_dim`, ...). (default: :obj:`None`)
        **train_settings (optional): Fields of :class:`graphrec.stages.train.TrainSettings`
            (`layers`, `lr`, `batch_size`, `patience`, `k`, `device`, ...), as the options of
            `graphrec train`.

    Raises:
        InputError: A training setting out of range, checked here, before the import and the
            encoders run.
        TypeError: A keyword that is not a field of TrainSettings.

    Example::

        rec = Recommender(dim=32, epochs=20, layers=2)  # temporary workspace; lexical encoding
        rec.fit(interactions, items=items)
        ids, scores = rec.recommend("u1", N=10)
        rec.save("my-model")
    """

    def __init__(
        self,
        workspace: str | os.PathLike | None = None,
        *,
        modalities: Sequence[str] = ("lexical",),
        epochs: int = TrainSettings.epochs,
        dim: int = TrainSettings.dim,
        seed: int = TrainSettings.seed,
        progress: bool = False,
        ease_dim: int = EASE_DIM,
        encode_settings: Mapping[str, Any] | None = None,
        **train_settings: Any,
    ) -> None:
        """Keep the settings and check the training ones (the class's Args); nothing is trained."""
        # A TemporaryDirectory removes its folder when collected: the model lives exactly as long as the object.
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workspace is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="graphrec-")
            workspace = self._tmp.name
        self._ws = Workspace(workspace)
        self.modalities = tuple(modalities)
        self.seed = seed
        self.progress = progress
        self.ease_dim = ease_dim
        self.encode_settings = dict(encode_settings or {})
        self.train_settings = TrainSettings(
            epochs=epochs, dim=dim, seed=seed, progress=progress, **train_settings
        )
        self.train_settings.check()  # bad settings fail here, not after the import and the encoders ran
        self.last_update: UpdateResult | None = (
            None  # what the latest partial_fit added
        )
        self._served: _Served | None = None

    def __repr__(self) -> str:
        """`Recommender('WORKSPACE')`: the class and its workspace folder."""
        return f"Recommender({str(self.workspace)!r})"

    @property
    def workspace(self) -> Path:
        """The workspace folder."""
        return self._ws.path

    # -- training ----------------------------------------------------------------------------------
    def fit(
        self,
        interactions: pd.DataFrame,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
        *,
        valid: pd.DataFrame | None = None,
        test: pd.DataFrame | None = None,
        split: Mapping[str, Any] | None = None,
        text_columns: Sequence[str] | None = None,
        attribute_columns: Sequence[str] | None = None,
        image_column: str | None = None,
        images_dir: str | os.PathLike | None = None,
        user_attribute_columns: Sequence[str] | None = None,
    ) -> Recommender:
        """Import the frames, encode, build the graph, train, fit the ranker; replaces the dataset.

        Two modes. **Serve** (the default, as implicit and LightFM fit what they are given): the
        model is fitted on every interaction, its settings chosen on an internal validation split
        first (`graphrec train` on a dataset that is not split), and lists leave out everything a
        user has. **Evaluate** (`split=` or `valid=` given): parts are held out, the model is fitted
        on train+valid and :meth:`evaluate` scores the test parts.

        Each stage writes atomically; when one fails, the ones before it stay done, as when the
        commands are run one by one (and a later stage refuses what no longer matches its inputs).

        The column roles (`text_columns`, `attribute_columns`, `image_column`,
        `user_attribute_columns`) are the options of `graphrec data import`; by default they are the
        columns present among the usual names, and user attributes are opt-in: none unless named,
        coarse only.

        Args:
            interactions (pandas.DataFrame): `user_id`, `item_id` and optionally `timestamp` (a
                number such as Unix seconds, or a datetime column, turned into Unix seconds) and
                `rating` or `weight` (docs/data-format.md). With `valid`, these are the training
                interactions.
            items (pandas.DataFrame, optional): `item_id` and content columns (text, an image path,
                categorical attributes); without it nothing is encoded. (default: :obj:`None`)
            users (pandas.DataFrame, optional): `user_id` and coarse attribute columns.
                (default: :obj:`None`)
            valid (pandas.DataFrame, optional): Pre-split validation interactions
                (`graphrec data import --valid`): evaluate mode with the given parts.
                (default: :obj:`None`)
            test (pandas.DataFrame, optional): Pre-split test interactions, scored by
                :meth:`evaluate`; needs `valid`. (default: :obj:`None`)
            split (Mapping, optional): Evaluate mode: the interactions are split as
                `graphrec data split` does, these settings of :func:`graphrec.data.splits.run_split`
                overriding its defaults (``{}``: random, 10% valid and 10% test per user, 20% of
                items held out cold, seed = this object's seed). Test parts and held-out cold items
                are never trained on. (default: :obj:`None`: serve mode)
            text_columns (sequence of str, optional): The items' text columns (a column role).
                (default: :obj:`None`: the columns present among the usual names)
            attribute_columns (sequence of str, optional): The items' categorical attribute columns
                (a column role). (default: :obj:`None`: the columns present among the usual names)
            image_column (str, optional): The items' image path column (a column role).
                (default: :obj:`None`: the column present among the usual names)
            images_dir (str or os.PathLike, optional): The folder the image column's paths are
                relative to. (default: :obj:`None`: the inputs folder, so give it whenever items
                have images)
            user_attribute_columns (sequence of str, optional): The users' coarse attribute columns
                (a column role). (default: :obj:`None`: none; user attributes are opt-in)

        Returns:
            This Recommender, fitted (so calls chain: `Recommender().fit(...).recommend(...)`).

        Raises:
            InputError: Bad input, in one line: `test` without `valid`; `split` together with
                `valid`; a frame that is not a pandas DataFrame or cannot be stored as a table;
                whatever the importer, the split or a later stage refuses (the checks of a CLI
                import).

        Example::

            rec = Recommender(epochs=20).fit(interactions, items=items, users=users)  # serve mode
            rec = Recommender().fit(interactions, items=items, split={})  # evaluate mode
            metrics = rec.evaluate(ks=(10, 20))
        """
        parts = {"interactions": interactions, "valid": valid, "test": test}
        frames = {**parts, "items": items, "users": users}
        roles = dict(
            images_dir=images_dir,
            text_columns=text_columns,
            attribute_columns=attribute_columns,
            image_column=image_column,
            user_attribute_columns=user_attribute_columns,
        )
        self._fit_stages(frames, split, roles)
        self._served = None
        return self

    def _fit_stages(
        self,
        frames: dict[str, pd.DataFrame | None],
        split: Mapping[str, Any] | None,
        roles: dict[str, Any],
    ) -> None:
        """Run `fit`'s stages.

        The parts given are checked, then, under the workspace's lock, the frames are imported (with
        their column roles), split if asked, encoded, the graph built, the model and ranker trained.
        """
        if frames["valid"] is None and frames["test"] is not None:
            raise InputError("test needs valid: give both pre-split parts, or neither")
        if frames["valid"] is not None and split is not None:
            raise InputError(
                "split settings apply when fit splits; with valid the parts are given"
            )
        ws = self._ws
        with ws.lock():
            for name in ("text_columns", "attribute_columns", "user_attribute_columns"):
                roles[name] = _list(roles[name])
            _import_frames(ws, frames, **roles)
            if split is not None:
                run_split(ws, **{"seed": self.seed, **split})
            self._encode(frames["items"] is not None)
            run_build(ws, force=True, progress=self.progress)
            run_train(
                ws,
                self.train_settings,
                ranker=RankSettings(k=self.train_settings.k, ease_dim=self.ease_dim),
            )

    def _encode(self, has_items: bool) -> None:
        """`fit`'s encode stage: the object's modalities over the items table, or none at all."""
        ws = self._ws
        if has_items and self.modalities:
            run_encode(
                ws,
                list(self.modalities),
                seed=self.seed,
                device=self.train_settings.device,
                progress=self.progress,
                **self.encode_settings,
            )
        else:
            # features of an earlier fit describe other items: the build and train stages would refuse them
            shutil.rmtree(ws.stage_dir("features"), ignore_errors=True)

    def partial_fit(
        self,
        interactions: pd.DataFrame | None = None,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
    ) -> Recommender:
        """Fold new interactions, items and users into the trained model without retraining.

        This is `graphrec update`. New items are recommendable at once (embedded from their content
        and the graph); new interactions join each user's history. All or nothing: on bad input
        nothing changes. `last_update` tells what was added.

        Args:
            interactions (pandas.DataFrame, optional): New `user_id`, `item_id` [,
                `rating`/`weight`, `timestamp`] rows; users first seen are added.
                (default: :obj:`None`)
            items (pandas.DataFrame, optional): New items with the dataset's item columns; an id
                already in the dataset is an error (changed content needs a new `fit`).
                (default: :obj:`None`)
            users (pandas.DataFrame, optional): New users with the dataset's user columns.
                (default: :obj:`None`)

        Returns:
            This Recommender, its serving state reloaded on the next call.

        Raises:
            InputError: Bad input (a frame that is not a DataFrame or cannot be stored, an item id
                already in the dataset, whatever `graphrec update` refuses), or a workspace not
                trained yet; nothing changes.

        Example::

            rec.partial_fit(items=new_items)  # recommendable at once, from content and the graph
            print(rec.last_update)
        """
        frames = {"interactions": interactions, "items": items, "users": users}
        with self._ws.lock():
            self.last_update = self._update(frames)
        for note in self.last_update.notes:
            log.info("%s", note)
        self._served = None
        return self

    def _update(self, frames: dict[str, pd.DataFrame | None]) -> UpdateResult:
        """Run `graphrec update` on the frames.

        They are written as Parquet under WS/inputs/update-NNNN/ first (so they pass the update's
        checks); a refused update leaves no inputs behind (all or nothing).
        """
        root = self._ws.path / INPUTS
        n = len(list(root.glob("update-*"))) + 1 if root.is_dir() else 1
        inputs = root / f"update-{n:04d}"
        try:
            files = {
                name: _write_table(inputs / f"{name}.parquet", frame, name)
                for name, frame in frames.items()
                if frame is not None
            }
            return run_update(
                self._ws,
                files.get("interactions"),
                files.get("items"),
                files.get("users"),
                progress=self.progress,
            )
        except BaseException:
            shutil.rmtree(inputs, ignore_errors=True)
            raise

    # -- persistence -------------------------------------------------------------------------------
    @classmethod
    def load(cls, workspace: str | os.PathLike, **settings: Any) -> Recommender:
        """A Recommender over a trained workspace.

        The workspace is one made by :meth:`fit`, :meth:`save` or the command line.

        Args:
            workspace (str or os.PathLike): The workspace folder; it is used in place, not copied.
            **settings (optional): Constructor settings for a later :meth:`fit` on it.

        Returns:
            A Recommender over `workspace`, ready to serve.

        Raises:
            InputError: The workspace has no model/ yet, or its model/ was made from earlier stages
                that have changed since (the message names the command that makes it again); or a
                setting is out of range.

        Example::

            rec = Recommender.load("my-model")
            ids, scores = rec.recommend("u1", N=10)
        """
        ws = Workspace(workspace)
        ws.require("model")
        return cls(ws.path, **settings)

    def save(self, path: str | os.PathLike) -> Path:
        """Copy the workspace to `path` atomically; readers see the old folder or the whole new one.

        Saving to the workspace itself does nothing: it is always up to date. An existing `path` is
        replaced only when it is a graphrec workspace (it holds config.json) or empty.

        Args:
            path (str or os.PathLike): The folder to write.

        Returns:
            `path`, as a Path.

        Raises:
            InputError: `path` is inside the workspace, or exists and is neither a graphrec
                workspace nor an empty folder.

        Example::

            rec.save("my-model")  # later: Recommender.load("my-model")
        """
        target = Path(path)
        source = self.workspace.resolve()
        if target.resolve() == source:
            return target
        if target.resolve().is_relative_to(source):
            raise InputError("cannot save a workspace into itself", file=target)
        if target.exists() and not (
            target.is_dir()
            and (Workspace(target).config_path.exists() or not any(target.iterdir()))
        ):
            raise InputError(
                "exists and is not a graphrec workspace: not replacing it", file=target
            )
        # the lock: no stage writes while it is copied
        with (
            self._ws.lock(),
            atomic_dir(target) as tmp,
        ):
            shutil.copytree(
                source, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(LOCK)
            )
        return target

    # -- serving -----------------------------------------------------------------------------------
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
        """Top-N items per user, best first, under the recommend contract.

        The contract (:mod:`graphrec.model.lists`) is the one `graphrec recommend` and
        :meth:`graphrec.Export.recommend` share: `ids, scores = rec.recommend(...)` as implicit's,
        `.to_frame()` for the table `user_id, item_id, rank, score` that `graphrec recommend`
        writes.

        A user's vector comes from their history (every interaction the system was given) through
        :meth:`graphrec.stages.rank.Ranker.user_vectors`; the score is its dot product with the item
        vector. Users without `user_items` get exactly the lists of
        :func:`graphrec.stages.recommend.recommend`.

        Args:
            userid (str, int or sequence): External user id(s) (ids are text: `7` means `"7"`); one
                id gives 1-D arrays, a sequence one row per user.
            user_items (Mapping or scipy sparse, optional): The items users have: user id -> item
                ids, or one sparse row per user of `userid` over the items in `item_ids` order
                (implicit's form). Left out of the lists with the stored history. A user the
                workspace lacks is scored from them (the graph embedding is the mean of those
                items', as for a live new user). Nothing is written. (default: :obj:`None`)
            N (int, optional): Items per user (`k`, the former name, is accepted).
                (default: :obj:`10`)
            filter_already_liked_items (bool, optional): Leave out the user's items (stored and
                given) (`filter_already_liked`, the former name, is accepted).
                (default: :obj:`True`)
            filter_items (sequence, optional): Item ids left out of every list.
                (default: :obj:`None`)
            recalculate_user (bool, optional): Score a known user from their stored history plus
                `user_items` (a session's fresh clicks) instead of the stored history alone.
                (default: :obj:`False`)
            items (sequence, optional): Item ids to rank among (`candidates`, the former name, is
                accepted). (default: :obj:`None`: every item)
            **aliases (optional): graphrec's former names only: `k`, `filter_already_liked`,
                `candidates` (each instead of its new name, not with it).

        Returns:
            :class:`graphrec.model.lists.Recommendations`: unpacks as `ids, scores` (object item ids
            and float32 scores, best first; 1-D for one id, [n_users, N] for a sequence; a row with
            fewer candidates than N is padded with None and NaN); `.to_frame()` gives the table.

        Raises:
            InputError: N not a whole number of at least 1; no user ids; a name given both as itself
                and as its former name; `user_items` of the wrong shape or type, or naming a user
                not asked for; an unknown user id without `user_items`; an unknown item id; a
                workspace not trained yet.
            TypeError: A keyword that is neither an argument nor one of the former names.

        Example::

            ids, scores = rec.recommend(["u1", "u2"], N=5)  # [2, 5] item ids and scores
            visitor = {"visitor": ["i03", "i07"]}  # a user the workspace lacks: their items
            table = rec.recommend("visitor", user_items=visitor).to_frame()
        """
        served = self._state()
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
        pos = self._user_index(served, req)
        top, scores = self._lists(served, req, pos, self._candidates(served, req))
        return Recommendations.of(req, self.item_ids, top, scores)

    @staticmethod
    def _user_index(served: _Served, req: ListRequest) -> np.ndarray:
        """Each requested user's index in the workspace (-1: not there).

        A user neither there nor given `user_items` is an error.
        """
        pos = served.users.get_indexer(pd.Index(req.users, dtype=object))
        unknown = [
            u for u, p in zip(req.users, pos) if p < 0 and u not in req.user_items
        ]
        if unknown:
            raise InputError(
                f"unknown user id {unknown[0]!r} (not in the workspace's dataset): pass the items "
                "they have as user_items"
            )
        return pos

    def _lists(
        self,
        served: _Served,
        req: ListRequest,
        pos: np.ndarray,
        cand: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The lists as (item indices [users, n], scores), best first, -1 and NaN past a short list.

        Users are scored from their stored history, or from the given items (unknown ones, or known
        ones recalculated).
        """
        rescored = np.asarray(
            [
                u in req.user_items and (p < 0 or req.recalculate)
                for u, p in zip(req.users, pos)
            ]
        )
        # a list holds every candidate at most
        n = min(req.n, len(served.items) if cand is None else len(cand))
        top = np.full((len(req.users), n), -1, np.int64)
        scores = np.full((len(req.users), n), np.nan, np.float32)
        stored = np.flatnonzero(~rescored)
        if len(stored):
            top[stored], scores[stored] = self._stored_lists(
                served, req, pos, stored, n, cand
            )
        if rescored.any():
            at = np.flatnonzero(rescored)
            top[at], scores[at] = self._rescored_lists(served, req, pos, at, n, cand)
        return top, scores

    def _stored_lists(
        self,
        served: _Served,
        req: ListRequest,
        pos: np.ndarray,
        rows: np.ndarray,
        n: int,
        cand: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The lists of the request's `rows` scored from their stored history.

        Given items are left out too when filtering.
        """
        given = self._rows(served, [req.user_items.get(req.users[i], []) for i in rows])
        return served.ranker.topk(
            pos[rows],
            n,
            served.history,
            cand,
            progress=self.progress,
            exclude_history=req.filter_liked,
            exclude=given if req.filter_liked and given.nnz else None,
        )

    def _rescored_lists(
        self,
        served: _Served,
        req: ListRequest,
        pos: np.ndarray,
        rows: np.ndarray,
        n: int,
        cand: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The lists of the request's `rows` scored from the items given.

        Known users' stored history is scored with them.
        """
        ranker, history = self._with_items(
            served, pos[rows], [req.user_items[req.users[i]] for i in rows]
        )
        return ranker.topk(
            np.arange(len(rows)),
            n,
            history,
            cand,
            progress=self.progress,
            exclude_history=req.filter_liked,
        )

    @property
    def item_ids(self) -> list[str]:
        """The external item ids in the workspace's order: the columns of a sparse `user_items`."""
        s = self._state()
        if s.item_list is None:
            s.item_list = [str(i) for i in s.dataset.item_ids]
        return s.item_list

    def similar_items(self, item_ids: Ids, k: int = DEFAULT_N) -> pd.DataFrame:
        """The k items most similar to each given item by taste.

        That is the list graphrec gives a user whose only item is that one (the user's vector from
        :meth:`graphrec.stages.rank.Ranker.fold_in`, scored against the item vectors, as the
        export's `similar_items`: `export_format.taste_vector`), the item itself left out. An item
        with interactions is read through the collaborative blocks alone (the graph filter's
        item-item row: what the people who have it chose; title words and genres do not enter); an
        item without any, through every block (its content).

        Args:
            item_ids (str, int or sequence): External item ids.
            k (int, optional): Similar items per item. (default: :obj:`10`)

        Returns:
            pandas.DataFrame: Columns `item_id, similar_item_id, rank, score` (the score is that dot
            product), up to k rows per given item, rank 1 the most similar.

        Raises:
            InputError: k below 1, an unknown item id, or a workspace not trained yet.

        Example::

            alike = rec.similar_items("i03", k=5)  # item_id, similar_item_id, rank, score
            alike = rec.similar_items(["i03", "i07"])  # up to k=10 per item
        """
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        served = self._state()
        ids = external_ids(item_ids)
        idx = self._item_index(served, ids)
        val, top = self._most_similar(served, idx, k)
        # the item itself, ranked last at -inf, drops out here
        rows, rank = np.nonzero(np.isfinite(val))
        return pd.DataFrame(
            {
                "item_id": np.asarray(ids, dtype=object)[rows],
                "similar_item_id": served.dataset.item_ids[top[rows, rank]],
                "rank": (rank + 1).astype(np.int32),
                "score": val[rows, rank],
            }
        )

    @staticmethod
    def _most_similar(
        served: _Served, idx: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item indices) of the k best items for a user whose only item is each of `idx`.

        That item itself is at -inf (not similar to itself: the same item).
        """
        if served.taste is None:
            served.taste = served.ranker.fold_in(), served.ranker.item_vectors()
        fold_in, item_vectors = served.taste
        blocks = served.ranker.blocks()
        warm = served.ranker.warm
        one_item_users = np.stack(
            [taste_vector(fold_in, blocks, int(i), bool(warm[i])) for i in idx]
        )
        sim = torch.from_numpy(one_item_users) @ torch.from_numpy(item_vectors).T
        sim[torch.arange(len(idx)), torch.from_numpy(idx)] = -torch.inf
        top_val, top_idx = topk_stable(sim, min(k, served.dataset.n_items))
        return top_val.numpy(), top_idx.numpy()

    def evaluate(self, ks: Sequence[int] = (10, 20)) -> pd.DataFrame:
        """Full-ranking metrics on the held-out test parts: `graphrec evaluate`, not writing eval/.

        One row per task (`warm`: test / warm items, `cold_item`: cold_test / cold items,
        `cold_user`: cold_user_test / all items, `overall`) that has test interactions; columns
        `task, users, held_out, candidates`, then `recall@K, ndcg@K, precision@K, hitrate@K, mrr@K`
        and `coverage@K, novelty@K, diversity@K, arp@K, arp_ratio@K, head_share@K` for each K.

        Args:
            ks (sequence of int, optional): The cut-offs K. (default: :obj:`(10, 20)`)

        Returns:
            pandas.DataFrame: The metrics, one row per task, the columns above.

        Raises:
            InputError: K values that are not positive integers, a K beyond the catalogue, a dataset
                in serve mode (not split: nothing is held out to score), or a workspace not trained
                yet.
        """
        metrics = evaluate(
            self._ws, ks, ranker=self._state().ranker, progress=self.progress
        )
        rows = []
        for task, res in metrics["tasks"].items():
            beyond = {
                f"{name}{at}": v
                for at, values in res["beyond"].items()
                for name, v in values.items()
            }
            rows.append(
                {
                    "task": task,
                    "users": res["users"],
                    "held_out": res["held_out"],
                    "candidates": res["candidates"],
                    **res["accuracy"],
                    **beyond,
                }
            )
        return pd.DataFrame(rows)

    # -- helpers -----------------------------------------------------------------------------------
    def _state(self) -> _Served:
        """The serving state, loaded from the workspace on first use (again after fit or update)."""
        if self._served is None:
            with self._ws.reading():
                ds = Dataset.load(self._ws)
                r = serving_ranker(self._ws, ds)
            self._served = _Served(
                ds, r, ds.matrix(GIVEN), pd.Index(ds.user_ids), pd.Index(ds.item_ids)
            )
        return self._served

    @staticmethod
    def _item_index(s: _Served, ids: list[str]) -> np.ndarray:
        """The workspace's index of each external item id; an unknown id is an error."""
        pos = s.items.get_indexer(pd.Index(ids, dtype=object))
        if (pos < 0).any():
            raise InputError(
                f"unknown item id {ids[int(np.flatnonzero(pos < 0)[0])]!r} (not in the workspace's "
                "dataset)"
            )
        return pos.astype(np.int64)

    def _candidates(self, s: _Served, req: ListRequest) -> np.ndarray | None:
        """Item indices to rank among: `items` (or every item) less `filter_items`.

        None (returned) means every item.
        """
        # a list holds an item once
        cand = None if req.items is None else np.unique(self._item_index(s, req.items))
        if not req.filter_items:
            return cand
        left_out = self._item_index(s, req.filter_items)
        return np.setdiff1d(np.arange(len(s.items)) if cand is None else cand, left_out)

    def _rows(self, s: _Served, items: list[list[str]]) -> sp.csr_matrix:
        """One 0/1 row per list of item ids, over the workspace's items."""
        idx = [self._item_index(s, i) for i in items]
        rows = np.repeat(np.arange(len(idx)), [len(i) for i in idx])
        cols = np.concatenate(idx) if idx else np.zeros(0, np.int64)
        out = sp.csr_matrix(
            (np.ones(len(cols), np.float32), (rows, cols)),
            shape=(len(idx), s.dataset.n_items),
        )
        out.sum_duplicates()
        out.data[:] = 1.0
        return out

    def _with_items(
        self, s: _Served, pos: np.ndarray, items: list[list[str]]
    ) -> tuple[Ranker, sp.csr_matrix]:
        """A ranker whose user rows are these users, and their history rows.

        A history row is the stored one (known users) plus the given items. A user the workspace
        lacks gets the model's live embedding from items (TrainedModel.user_embedding_from_items)
        and no attribute values.
        """
        known = pos >= 0
        at = np.where(known, pos, 0)
        idx = [self._item_index(s, i) for i in items]
        keep = sp.diags(known.astype(np.float32))  # stored rows of known users only
        history = (self._rows(s, items) + keep @ s.history[at]).tocsr()
        history.eliminate_zeros()  # a row without entries is how user_vectors knows a user without history
        history.data[:] = 1.0
        user_emb = s.ranker.user_emb[at].copy()
        if not known.all():
            if s.model is None:
                s.model = load_model(self._ws)
            for j in np.flatnonzero(~known):
                user_emb[j] = s.model.user_embedding_from_items(idx[j])
        groups = None
        if s.ranker.groups is not None:
            groups = (keep @ s.ranker.groups[at]).tocsr()
        return dataclasses.replace(s.ranker, user_emb=user_emb, groups=groups), history


def _import_frames(
    ws: Workspace, frames: dict[str, pd.DataFrame | None], **roles: Any
) -> None:
    """Run `graphrec data import` on the frames.

    They are written as Parquet under WS/inputs/fit/ first (so they pass the importer's checks);
    `valid` present: pre-split parts. roles: the importer's column-role keywords.
    """
    inputs = ws.path / INPUTS / "fit"
    # a part the previous fit had and this one lacks must go
    shutil.rmtree(inputs, ignore_errors=True)
    files = {
        name: _write_table(inputs / f"{name}.parquet", frame, name)
        for name, frame in frames.items()
        if frame is not None
    }
    parts = (
        {
            "train": files["interactions"],
            "valid": files["valid"],
            "test": files.get("test"),
        }
        if "valid" in files
        else {"interactions": files["interactions"]}
    )
    _, notes = import_files(
        ws.path,
        items=files.get("items"),
        users=files.get("users"),
        name=ws.path.name,
        **roles,
        **parts,
    )
    for note in notes:
        log.info("%s", note)


def _list(values: Sequence[str] | None) -> list[str] | None:
    """The values as a list; None stays None."""
    return None if values is None else list(values)


def _write_table(path: Path, frame: pd.DataFrame, name: str) -> str:
    """Write a frame as Parquet for the importer (which reads every cell as text).

    Datetime timestamps become Unix seconds, the number the importer expects.
    """
    if not isinstance(frame, pd.DataFrame):
        raise InputError(
            f"{name} must be a pandas DataFrame, got {type(frame).__name__}"
        )
    if "timestamp" in frame.columns and pd.api.types.is_datetime64_any_dtype(
        frame["timestamp"]
    ):
        ts = frame["timestamp"]
        frame = frame.assign(
            timestamp=(ts - pd.Timestamp(0, tz=ts.dt.tz)) // pd.Timedelta(seconds=1)
        )
    try:
        write_parquet(path, frame)
    # e.g. a column mixing numbers and text
    except (
        pa.ArrowInvalid,
        pa.ArrowTypeError,
        ValueError,
    ) as e:
        raise InputError(
            f"{name} cannot be stored as a table ({e})", file=path
        ) from None
    return str(path)
