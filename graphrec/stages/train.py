"""Training: BPR with exact negative sampling, early stopping on validation NDCG@K, checkpoints, resume, refit.

Phases. "select" trains on the train part only and evaluates every epoch on `valid` (warm items),
`cold_valid` (items without training interactions, content path) and `cold_user_valid` (users known by
their `cold_user_context` interactions only). The selection score is the mean of the NDCG@K of the parts
present; training stops after `patience` epochs without improvement and the best epoch is kept.
"refit" then retrains from scratch with the same settings on train+valid for the selected number of
epochs (cold_valid is never trained on: its items stay cold, as the benchmark's cold items are).

Every epoch writes model/epoch-N.safetensors (parameters, Adam state, loop state in the metadata);
`resume=True` continues from the newest one, so an interrupted run ends as an uninterrupted one would:
each epoch's sampling is seeded by (seed, phase, epoch), not by a running generator.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from graphrec.core.device import resolve_device
from graphrec.core.errors import InputError
from graphrec.core.feature_store import Features, load_features
from graphrec.core.io import atomic_path, native_errors, usual_mode
from graphrec.core.memory import check_fits
from graphrec.core.progress import progress_bar
from graphrec.core.settings import TrainSettings
from graphrec.core.workspace import LINEAGE, TRAINING, Workspace
from graphrec.data.dataset import TRAINED, Dataset
from graphrec.data.splits import selection_split
from graphrec.kg.graph import KnowledgeGraph
from graphrec.model import artifacts
from graphrec.model.artifacts import Checkpoints, TrainResult
from graphrec.model.gnn import GraphRec, LossWeights, TrainedModel
from graphrec.model.metrics import embedding_accuracy, sample_validation_rows
from graphrec.model.propagation import GraphInputs, build_inputs, sample_neighbourhood
from graphrec.stages.rank import (
    Ranker,
    RankSettings,
    fit_blend,
    save_ranker,
    serve_embeddings,
)

PHASES = ("select", "refit")


# Full mode computes a batch's loss in chunks of this many triples (see _Step): a batch of millions of
# triples costs one propagation and the memory of one chunk.
# -- sampling -------------------------------------------------------------------------------------------
def sample_negatives(
    users: np.ndarray,
    positives: np.ndarray,
    pool: np.ndarray,
    n_items: int,
    rng: np.random.Generator,
    max_rounds: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """One negative per user from `pool`, never one of the user's `positives` (sorted u*n_items+i keys).

    Rejection sampling, vectorised: redraw only the rows that hit a positive. Rows still unresolved after
    `max_rounds` (users who interacted with most of the pool) draw from their exact complement; a user with
    no item left to be a negative has its rows dropped (keep mask False).
    """
    neg = pool[rng.integers(len(pool), size=len(users))]
    bad = np.ones(len(users), bool)
    for _ in range(max_rounds):
        keys = users[bad] * n_items + neg[bad]
        hit = _contains(positives, keys)
        idx = np.flatnonzero(bad)
        bad[idx[~hit]] = False
        if not hit.any():
            break
        neg[idx[hit]] = pool[rng.integers(len(pool), size=int(hit.sum()))]
    keep = np.ones(len(users), bool)
    for u in np.unique(users[bad]):  # rare: only near-saturated users reach this loop
        rows = np.flatnonzero(bad & (users == u))
        lo, hi = np.searchsorted(positives, [u * n_items, (u + 1) * n_items])
        free = np.setdiff1d(pool, positives[lo:hi] - u * n_items)
        if len(free):
            neg[rows] = free[rng.integers(len(free), size=len(rows))]
        else:
            keep[rows] = False
    return keep, neg


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """bool [len(keys)]: which keys are in `sorted_keys`; the queries are sorted first, so the binary searches
    walk memory in order (3-5x faster than random lookups once `sorted_keys` outgrows the cache)."""
    order = np.argsort(keys, kind="stable")
    pos = np.searchsorted(sorted_keys, keys[order])
    found = np.empty(len(keys), bool)
    found[order] = (pos < len(sorted_keys)) & (
        sorted_keys[np.minimum(pos, len(sorted_keys) - 1)] == keys[order]
    )
    return found


def epoch_triples(
    pairs: np.ndarray, n_items: int, pool: np.ndarray, seed: int, phase: int, epoch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, positives, negatives) of one epoch: every training pair once, in a seeded order."""
    rng = np.random.default_rng([seed, phase, epoch])
    order = rng.permutation(len(pairs))
    users, items = pairs[order] // n_items, pairs[order] % n_items
    keep, neg = sample_negatives(users, pairs, pool, n_items, rng)
    return users[keep], items[keep], neg[keep]


# -- checkpoints (at the paths graphrec.model.artifacts.Checkpoints names) -----------------------------------------
def save_checkpoint(
    path: Path, model: GraphRec, opt: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Parameters, Adam state and the loop state (JSON in the safetensors metadata), written atomically."""
    tensors = {
        f"param/{k}": v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    for pid, st in opt.state_dict()["state"].items():
        for key, val in st.items():
            tensors[f"opt/{pid}/{key}"] = (
                torch.as_tensor(val).detach().cpu().contiguous()
            )
    with atomic_path(path) as tmp, native_errors(path):
        save_file(tensors, str(tmp), metadata={"state": json.dumps(state)})
        # safetensors writes 0600: checkpoints get the umask's mode, as every artifact
        usual_mode(tmp, 0o666)


def read_checkpoint_state(path: Path) -> dict[str, Any]:
    """The loop state stored in a checkpoint's metadata (read before any tensor is loaded)."""
    try:
        with safe_open(str(path), "pt") as f:
            return json.loads((f.metadata() or {})["state"])
    except Exception as e:  # a damaged file: safetensors raises several types
        raise InputError(
            f"unreadable checkpoint ({e}); run without --resume", file=path
        ) from None


def load_checkpoint(
    path: Path, model: GraphRec, opt: torch.optim.Optimizer | None
) -> None:
    """Restore parameters (and the optimiser's state when `opt` is given) from a checkpoint."""
    try:
        tensors = load_file(str(path))
    except Exception as e:
        raise InputError(
            f"unreadable checkpoint ({e}); run without --resume", file=path
        ) from None
    dev = model.user_id.device
    model.load_state_dict(
        {k[6:]: v.to(dev) for k, v in tensors.items() if k.startswith("param/")}
    )
    if opt is not None:
        sd = opt.state_dict()
        st: dict[int, dict[str, torch.Tensor]] = {}
        for name, v in tensors.items():
            if name.startswith("opt/"):
                _, pid, key = name.split("/", 2)
                st.setdefault(int(pid), {})[key] = v if key == "step" else v.to(dev)
        sd["state"] = st
        opt.load_state_dict(sd)


def load_model(workspace: Workspace | str | Path) -> TrainedModel:
    """The final model of a workspace's model/ stage (parameters, exported embeddings and model.json)."""
    meta, params, user, item = artifacts.read_model(Workspace.of(workspace))
    # read_model checked it is there
    shape = cast(artifacts.Architecture, meta.architecture)
    model = GraphRec(
        shape.n_users,
        shape.n_items,
        shape.dim,
        shape.layers,
        shape.modality_dims,
        shape.node_types,
    )
    model.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    return TrainedModel(model, user, item, meta)


# -- the loop -------------------------------------------------------------------------------------------
class _Step(torch.nn.Module):
    """One batch's summed loss as a module, so DistributedDataParallel can wrap it."""

    def __init__(self, model: GraphRec, s: TrainSettings):
        super().__init__()
        self.model, self.s = model, s

    def forward(
        self,
        inp: GraphInputs,
        users: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        gen: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        s = self.s
        weights = LossWeights(s.cold_weight, s.align_weight, s.reg)
        if s.mode == "full":
            return self.model.full_graph_loss(inp, users, pos, neg, weights)
        seeds = torch.cat([users, pos + inp.n_users, neg + inp.n_users])
        nodes, sub = sample_neighbourhood(inp.ui, seeds, list(s.fanouts), gen)
        return self.model.sampled_loss(inp, users, pos, neg, nodes, sub, weights)


def _make_optimizer(model: GraphRec, s: TrainSettings) -> torch.optim.Optimizer:
    emb = [model.user_id, model.item_id]
    rest = [p for n, p in model.named_parameters() if n not in ("user_id", "item_id")]
    lr = cast(float, s.lr)  # run_train resolved the settings: the rate is decided
    return torch.optim.Adam(
        [
            {"params": emb, "weight_decay": 0.0},
            {"params": rest, "weight_decay": s.weight_decay},
        ],
        lr=lr,
    )


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _Run:
    """One training run's fixed inputs: dataset tensors, the graph, validation targets, output folder."""

    def __init__(
        self, ws: Workspace, s: TrainSettings, device: torch.device, out: Workspace
    ):
        self.ws, self.s, self.device, self.out = ws, s, device, out
        ds = Dataset.load(ws)
        # serve mode (a dataset that is not split): settings chosen on an internal split, then refit on everything
        self.ds = ds = ds if ds.is_split else selection_split(ds, s.seed)
        self.nu, self.ni = ds.n_users, ds.n_items
        self.train = self._pairs("train")
        if len(self.train) == 0:
            raise InputError(
                "the dataset's train part is empty", file=ws.stage_dir("dataset")
            )
        self.kg = KnowledgeGraph.load(ws) if ws.stage_dir("graph").is_dir() else None
        self.features = load_features(ws) if ws.stage_dir("features").is_dir() else {}
        # ID and attribute tables with their gradients and Adam's two moments, and each layer's propagated rows
        # (kept for the backward pass), before any of it is allocated
        nodes = max(
            self.nu + self.ni,
            sum(self.kg.num_nodes.values()) if self.kg is not None else 0,
        )
        check_fits(
            nodes * s.dim * 4 * (4 + 3 * (s.layers + 1)),
            f"a {s.dim}-dimensional model of {nodes:,} nodes",
            "--dim",
        )
        self.valid = self._pairs("valid")
        self.context = self._pairs("cold_user_context")
        self.dir = artifacts.model_dir(out)

    def _pairs(self, *parts: str) -> np.ndarray:
        p = self.ds.part(*parts)
        return np.unique(
            p["user"].to_numpy(np.int64) * self.ds.n_items
            + p["item"].to_numpy(np.int64)
        )

    def csr(self, pairs: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix(
            (np.ones(len(pairs), bool), (pairs // self.ni, pairs % self.ni)),
            shape=(self.nu, self.ni),
        )

    def inputs(self, pairs: np.ndarray) -> GraphInputs:
        extra = (
            (self.context // self.ni, self.context % self.ni)
            if len(self.context)
            else None
        )
        return build_inputs(
            self.nu,
            self.ni,
            pairs // self.ni,
            pairs % self.ni,
            self.kg,
            self.features,
            extra=extra,
        ).to(self.device)

    def new_model(self, inp: GraphInputs) -> GraphRec:
        types: dict[str, int] = {}
        for node_type, op in list(inp.item_attr.values()) + list(
            inp.user_attr.values()
        ):
            types[node_type] = int(op.shape[1])
        g = torch.Generator().manual_seed(self.s.seed)
        return GraphRec(
            self.nu,
            self.ni,
            self.s.dim,
            self.s.layers,
            {m: int(v.shape[1]) for m, v in inp.features.items()},
            types,
            generator=g,
        ).to(self.device)

    def validation_sets(self, pairs: np.ndarray, inp: GraphInputs) -> dict[str, tuple]:
        """name -> (truth, exclude, candidates) for the held-out parts the dataset has."""
        seen = self.csr(np.concatenate([pairs, self.context]))
        warm = np.flatnonzero(inp.item_degree.cpu().numpy() > 0)
        cold = np.flatnonzero(inp.item_degree.cpu().numpy() == 0)
        out = {}
        for name, part, cand in (
            ("valid", "valid", warm),
            ("cold_valid", "cold_valid", cold),
            ("cold_user_valid", "cold_user_valid", np.arange(self.ni)),
        ):
            p = self._pairs(part)
            if len(p):
                out[name] = (sample_validation_rows(self.csr(p), len(cand)), seen, cand)
        return out


def _evaluate(
    model: GraphRec, inp: GraphInputs, sets: dict[str, tuple], k: int
) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        user, item = model.get_embedding(inp).export(inp.item_degree > 0)
    model.train()
    out = {}
    for name, (truth, exclude, cand) in sets.items():
        n, r, _ = embedding_accuracy(user, item, truth, exclude, cand, k)
        out[f"{name}_ndcg@{k}"], out[f"{name}_recall@{k}"] = n, r
    ndcgs = [
        out[f"{name}_ndcg@{k}"]
        for name in sets
        if not np.isnan(out[f"{name}_ndcg@{k}"])
    ]
    out["score"] = float(np.mean(ndcgs)) if ndcgs else float("nan")
    return out


def _epoch(
    step: torch.nn.Module,
    opt: torch.optim.Optimizer,
    inp: GraphInputs,
    triples: tuple[np.ndarray, np.ndarray, np.ndarray],
    batch_size: int,
    device: torch.device,
    gen: torch.Generator,
) -> dict[str, float]:
    """One pass over the epoch's (user, positive, negative) triples, a step per batch (this rank's share of each
    under torchrun); the summed losses."""
    rank, world = _dist()
    users = triples[0]
    totals = {"loss": 0.0, "bpr": 0.0, "cold": 0.0, "align": 0.0}
    for b in range(0, len(users), batch_size):  # batch_size: run_train resolved it
        n_b = min(batch_size, len(users) - b)
        # this rank's share of the batch
        lo, hi = (
            b + rank * n_b // world,
            b + (rank + 1) * n_b // world,
        )
        loss, parts = step(
            inp, *(torch.as_tensor(x[lo:hi], device=device) for x in triples), gen
        )
        # DDP averages gradients over ranks: scale so the sum equals the whole batch's mean loss.
        (loss * world / n_b).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        totals["loss"] += loss.item()
        for name, v in parts.items():
            totals[name] += v
    return totals


_NO_BEST: dict[str, Any] = {"score": -np.inf, "epoch": 0}


def _resumed(
    ckpts: Checkpoints,
    settings: dict[str, Any],
    model: GraphRec,
    opt: torch.optim.Optimizer,
    max_epochs: int,
) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    """(history, best, first epoch to run) from the phase's newest checkpoint, its parameters and Adam state
    loaded; a fresh start when there is none. A stopped phase runs no more epochs."""
    last = ckpts.latest()
    if not last:
        return [], _NO_BEST, 1
    state = read_checkpoint_state(last[1])
    if state["settings"] != settings:
        raise InputError(
            "checkpoint was made with other settings; run without --resume",
            file=last[1],
        )
    load_checkpoint(last[1], model, opt)
    return (
        state["history"],
        state["best"],
        max_epochs + 1 if state.get("stopped") else last[0] + 1,
    )


@dataclasses.dataclass
class _Phase:
    """One training phase's fixed parts: its pairs and graph, the model with its optimiser, what it validates on,
    where its checkpoints go."""

    run: _Run
    name: str  # "select" or "refit"
    pairs: np.ndarray  # the user-item keys it trains on
    inp: GraphInputs
    model: GraphRec
    opt: torch.optim.Optimizer
    # the model's loss, wrapped in DistributedDataParallel under torchrun
    step: torch.nn.Module
    # validation sets (empty: nothing validated, the last epoch is kept)
    sets: dict[str, tuple]
    pool: np.ndarray  # the items negatives are drawn from: warm ones
    ckpts: Checkpoints
    # the result settings a checkpoint must match to be resumed
    settings: dict[str, Any]


def _new_phase(run: _Run, name: str, pairs: np.ndarray, validate: bool) -> _Phase:
    """A fresh model and optimiser over the graph of `pairs`, with the phase's validation sets."""
    settings = run.s
    inp = run.inputs(pairs)
    model = run.new_model(inp)
    opt = _make_optimizer(model, settings)
    step: torch.nn.Module = _Step(model, settings)
    if _dist()[1] > 1:
        step = torch.nn.parallel.DistributedDataParallel(step)
    sets = run.validation_sets(pairs, inp) if validate else {}
    pool = np.flatnonzero(inp.item_degree.cpu().numpy() > 0)
    return _Phase(
        run,
        name,
        pairs,
        inp,
        model,
        opt,
        step,
        sets,
        pool,
        Checkpoints(run.dir, name),
        settings.result_settings(),
    )


def _fit(
    run: _Run,
    phase: str,
    pairs: np.ndarray,
    max_epochs: int,
    resume: bool,
    validate: bool,
) -> tuple[GraphRec, GraphInputs, list[dict[str, Any]], int]:
    """Train one phase; returns (model at its selected/last epoch, its inputs, history, selected epoch)."""
    state = _new_phase(run, phase, pairs, validate)
    history, best, start = (
        _resumed(state.ckpts, state.settings, state.model, state.opt, max_epochs)
        if resume
        else ([], _NO_BEST, 1)
    )
    rank = _dist()[0]
    bar = progress_bar(
        range(start, max_epochs + 1),
        show=run.s.progress and rank == 0,
        desc=phase,
        initial=start - 1,
        total=max_epochs,
    )
    for epoch in bar:
        row = _train_epoch(state, epoch)
        best, stopped = _judge_epoch(state, row, best, max_epochs)
        history.append(row)
        if rank == 0:
            bar.set_postfix(_save_epoch(state, history, best, stopped))
        if stopped:
            break
    bar.close()
    return _phase_result(state, history, best)


def _train_epoch(state: _Phase, epoch: int) -> dict[str, Any]:
    """One epoch of training; its history row (phase, epoch, seconds, mean losses). Stops on a non-finite loss."""
    run = state.run
    t0 = time.perf_counter()
    users, pos, neg = epoch_triples(
        state.pairs, run.ni, state.pool, run.s.seed, PHASES.index(state.name), epoch
    )
    gen = torch.Generator(device=run.device).manual_seed(run.s.seed * 1_000_003 + epoch)
    triples = (users, pos, neg)
    batch_size = cast(int, run.s.batch_size)
    totals = _epoch(
        state.step, state.opt, state.inp, triples, batch_size, run.device, gen
    )
    if not math.isfinite(totals["loss"]):
        raise InputError(
            f"training diverged in epoch {epoch} of {state.name}: the loss is {totals['loss']} (lower "
            "--lr, or check --reg and the loss weights); model/ is unchanged"
        )
    return {
        "phase": state.name,
        "epoch": epoch,
        "seconds": round(time.perf_counter() - t0, 3),
        **{name: v / max(len(users), 1) for name, v in totals.items()},
    }


def _judge_epoch(
    state: _Phase, row: dict[str, Any], best: dict[str, Any], max_epochs: int
) -> tuple[dict[str, Any], bool]:
    """(best so far, whether the phase stops) after the epoch of `row`: rank 0 validates (adding the scores to
    `row`) and checkpoints a new best; without validation sets the phase runs to `max_epochs`."""
    rank, world = _dist()
    epoch, settings = row["epoch"], state.run.s
    stopped = False  # ranks other than 0 learn it from rank 0
    if state.sets and rank == 0:
        row.update(_evaluate(state.model, state.inp, state.sets, settings.k))
        if row["score"] > best["score"] + 1e-5:
            best = {"score": row["score"], "epoch": epoch}
            save_checkpoint(state.ckpts.best, state.model, state.opt, {"epoch": epoch})
        stopped = epoch - best["epoch"] >= settings.patience or epoch == max_epochs
    elif not state.sets:
        stopped = epoch == max_epochs
    if world > 1:
        flag = torch.tensor([int(stopped)])
        dist.broadcast(flag, 0)
        stopped = bool(flag.item())
    return best, stopped


def _save_epoch(
    state: _Phase, history: list[dict[str, Any]], best: dict[str, Any], stopped: bool
) -> dict[str, str]:
    """Checkpoint the epoch just run (parameters, Adam state, the loop state to resume from) and prune older
    ones; the progress bar's postfix."""
    settings, row = state.run.s, history[-1]
    epoch = row["epoch"]
    loop_state = {
        "phase": state.name,
        "epoch": epoch,
        "settings": state.settings,
        "history": history,
        "best": best,
        "stopped": stopped,
    }
    save_checkpoint(state.ckpts.path(epoch), state.model, state.opt, loop_state)
    state.ckpts.prune(epoch, settings.keep_checkpoints)
    shown = ("loss", f"valid_ndcg@{settings.k}", f"cold_valid_ndcg@{settings.k}")
    return {name: f"{row[name]:.4f}" for name in shown if name in row}


def _phase_result(
    state: _Phase, history: list[dict[str, Any]], best: dict[str, Any]
) -> tuple[GraphRec, GraphInputs, list[dict[str, Any]], int]:
    """`_fit`'s result: a validated phase's model is its best epoch's (rank 0 decided which), another phase's
    its last."""
    if not state.sets:
        last = len(history) and int(history[-1]["epoch"])
        return state.model, state.inp, history, last
    if _dist()[1] > 1:
        obj = [best]
        dist.broadcast_object_list(obj, 0)
        best = obj[0]
    load_checkpoint(state.ckpts.best, state.model, None)
    return state.model, state.inp, history, int(best["epoch"])


def run_train(
    workspace: Workspace | str | Path,
    settings: TrainSettings | None = None,
    resume: bool = False,
    ranker: RankSettings | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train the GNN and fit its ranker, then switch the new model/ in: the `graphrec train` stage.

    Selects on validation, refits on train+valid, fits the ranker, and switches the new model/
    (embeddings, parameters, history, model.json, ranker) in with its config record: one
    transaction, one lock, one switch. Every setting is checked before any work; a run that fails
    (bad input, diverged training) keeps the old model/. The exported embeddings cover every user
    and item (graphrec.model.gnn).

    Under torchrun (torch.distributed initialised) every rank trains its share of each batch; rank 0
    validates, fits the ranker and writes (it alone holds the workspace lock).

    Args:
        workspace: The workspace folder (dataset/ split; graph/ and features/ used when present).
        settings: The `TrainSettings`; None: the defaults.
        resume: Continue from the newest checkpoint in model/.
        ranker: The `RankSettings` of the ranker's fit (its k is the training's k unless given).
        **overrides: `TrainSettings` fields as keywords (e.g. epochs=100, dim=128), applied over
            `settings`.

    Returns:
        The `TrainResult`: the selected epoch, the validation scores, the history, whether the model
        was refit, the exported (user, item) embeddings, and whether the ranker serves the GNN
        block.

    Raises:
        InputError: On bad input (a setting out of range, a missing stage, ...) or diverged training
            (NaN or infinite embeddings); model/ is unchanged.
        TypeError: When an override names no `TrainSettings` field.

    Example::

        from graphrec.core.settings import RankSettings
        from graphrec.stages.train import run_train

        result = run_train("ws", epochs=100, dim=128, ranker=RankSettings(k=10))
    """
    ws = Workspace.of(workspace)
    # Under torchrun every rank runs this on the same workspace; rank 0 alone writes, so it alone holds the lock.
    with ws.lock() if _dist()[0] == 0 else contextlib.nullcontext():
        return _run_train(ws, settings, resume, ranker, **overrides)


def _run_train(
    ws: Workspace,
    settings: TrainSettings | None,
    resume: bool,
    ranker: RankSettings | None,
    **overrides: Any,
) -> TrainResult:
    """`run_train`'s work, under the lock it holds: select, fit the ranker, refit, switch model/ in."""
    run, rank_settings = _prepare(ws, settings, resume, ranker, overrides)
    rank, world = _dist()
    model, inp, history, selected = _select(run, resume)
    select = _embeddings(model, inp)
    _check_finite(*select, history)
    blend, gnn_kept = _fit_ranker(run, select, rank_settings)
    validation = _validation(run.s, history, selected, blend)
    refit = run.s.refit and len(run.valid) > 0 and selected > 0 and gnn_kept
    if rank == 0:
        _stage_select_embeddings(run.out, select, refit)
    # what the served model is fitted on
    final_pairs = run._pairs(*run.ds.refit_parts) if refit else run.train
    user, item = select
    if refit:
        model, inp, history, (user, item) = _refit(
            run, final_pairs, selected, resume, history
        )
    result = TrainResult(
        selected,
        validation,
        history,
        refit,
        user,
        item,
        "",
        select if refit else None,
        gnn_kept,
        run.ds.mode,
    )
    if rank == 0:  # rank 0 fitted the blend
        blend = cast(Ranker, blend)
        result = _switch_in(
            run, model, inp, result, len(final_pairs), blend, rank_settings
        )
    # every rank leaves once rank 0 has switched model/ in: none tears its process group down mid-way
    if world > 1:
        dist.barrier()
    return result


def _fit_ranker(
    run: _Run, select: tuple[np.ndarray, np.ndarray], rank_settings: RankSettings
) -> tuple[Ranker | None, bool]:
    """(the ranker's blend, fitted by rank 0 alone: None elsewhere; whether it keeps the GNN block, on every
    rank). The blend is fitted on the selection-phase embeddings (the refit ones would have seen the
    validation answers) and decides whether the GNN block earns its place; the GNN is refit only when it is
    served."""
    blend = (
        fit_blend(run.ws, select, rank_settings, ds=run.ds, progress=run.s.progress)
        if _dist()[0] == 0
        else None
    )
    return blend, _from_rank0(blend.record.gnn_kept if blend is not None else None)


def _stage_select_embeddings(
    out: Workspace, select: tuple[np.ndarray, np.ndarray], refit: bool
) -> None:
    """Keep the selection-phase embeddings beside the served ones when the model is refit; else none."""
    if refit:
        artifacts.write_embeddings(out, *select, select=True)
    else:
        artifacts.drop_select_embeddings(out)


def _prepare(
    ws: Workspace,
    settings: TrainSettings | None,
    resume: bool,
    ranker: RankSettings | None,
    overrides: dict[str, Any],
) -> tuple[_Run, RankSettings]:
    """The run's inputs and resolved settings, and the ranker's settings, all checked; the staging folder
    prepared (by rank 0, every rank waiting for it)."""
    chosen = dataclasses.replace(settings or TrainSettings(), **overrides)
    if isinstance(chosen.fanouts, list):
        chosen.fanouts = tuple(chosen.fanouts)
    chosen.check()
    # one protocol for the whole model: --no-refit keeps the ranker's collaborative parts on train as well, and
    # --no-gnn leaves the GNN's block out of its blend
    rank_settings = dataclasses.replace(
        ranker or RankSettings(k=chosen.k), refit=chosen.refit, gnn=chosen.gnn
    )
    torch.manual_seed(chosen.seed)
    rank, world = _dist()
    out = Workspace(ws.path / TRAINING)
    # checks the inputs before anything is written
    run = _Run(ws, chosen, resolve_device(chosen.device), out)
    run.s = chosen.resolved(len(run.train))
    rank_settings.check(run.nu, run.ni)
    if rank == 0:
        artifacts.prepare_training(out, ws, resume)
    if world > 1:
        dist.barrier()  # every rank resumes from the folder rank 0 prepared
    return run, rank_settings


def _select(
    run: _Run, resume: bool
) -> tuple[GraphRec, GraphInputs, list[dict[str, Any]], int]:
    """The selection phase on train, validated every epoch: (model, inputs, history, selected epoch)."""
    if run.s.gnn:
        return _fit(run, "select", run.train, run.s.epochs, resume, validate=True)
    # closed-form only: the untrained model is recorded (update grows it) but its block is never served
    inp = run.inputs(run.train)
    return run.new_model(inp), inp, [], 0


def _refit(
    run: _Run,
    pairs: np.ndarray,
    epochs: int,
    resume: bool,
    history: list[dict[str, Any]],
) -> tuple[GraphRec, GraphInputs, list[dict[str, Any]], tuple[np.ndarray, np.ndarray]]:
    """The refit phase: a fresh model trained on `pairs` for the selected number of epochs; (model, inputs,
    both phases' history, its (user, item) embeddings, checked finite)."""
    model, inp, refit_history, _ = _fit(
        run, "refit", pairs, epochs, resume, validate=False
    )
    history = history + refit_history
    user, item = _embeddings(model, inp)
    _check_finite(user, item, history)
    return model, inp, history, (user, item)


def _validation(
    settings: TrainSettings,
    history: list[dict[str, Any]],
    selected: int,
    blend: Ranker | None,
) -> dict[str, float]:
    """The validation scores reported: the selected epoch's accuracy, or without GNN epochs the blend's own
    validation NDCG per task."""
    if not settings.gnn and blend is not None:
        return {
            f"{task}_blend_ndcg@{settings.k}": v
            for task, v in blend.record.selection["validation_ndcg"].items()
        }
    row = next((h for h in history if h["epoch"] == selected), {})
    return {k: v for k, v in row.items() if "@" in k or k == "score"}


def _switch_in(
    run: _Run,
    model: GraphRec,
    inp: GraphInputs,
    result: TrainResult,
    fitted_interactions: int,
    blend: Ranker,
    rank_settings: RankSettings,
) -> TrainResult:
    """Write the staged model/ (embeddings, parameters, history, model.json, the ranker serving these embeddings)
    and its config record, then switch both in at once; the result with the embeddings' sha256."""
    ws, out = run.ws, run.out
    result = _stage_model(run, model, inp, result, fitted_interactions, blend)
    _record_model(run, rank_settings)
    # the new model/ and its record in one step (the config keeps the other stages' records as they are)
    ws.switch(
        [
            (artifacts.model_dir(out), artifacts.model_dir(ws)),
            (out.config_path, ws.config_path),
        ],
        out,
    )
    return result


def _stage_model(
    run: _Run,
    model: GraphRec,
    inp: GraphInputs,
    result: TrainResult,
    fitted_interactions: int,
    blend: Ranker,
) -> TrainResult:
    """Write the staged model/: embeddings, parameters, history, model.json and the ranker; the result with the
    embeddings' sha256."""
    out = run.out
    result = dataclasses.replace(
        result,
        embeddings_sha256=artifacts.write_embeddings(out, result.user, result.item),
    )
    params = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    artifacts.write_model(
        out,
        params,
        _model_meta(
            run,
            model,
            inp,
            result.selected_epoch,
            result.validation,
            result.refit,
            fitted_interactions,
        ),
        result.history,
    )
    # the ranker is written into the staged model/ with the embeddings just written, so readers never see a
    # model without its ranker
    save_ranker(
        out,
        serve_embeddings(
            blend, result.user, result.item, result.embeddings_sha256, result.refit
        ),
    )
    return result


def _record_model(run: _Run, rank_settings: RankSettings) -> None:
    """The staged config: the workspace's, with the model stage's record of these settings and inputs."""
    ws, out, s = run.ws, run.out, run.s
    if ws.config_path.exists():
        shutil.copy2(ws.config_path, out.config_path)
    out.record(
        "model",
        {
            **s.result_settings(),
            "device": s.device,
            "ranker": dataclasses.asdict(rank_settings),
        },
        inputs={"graph": run.kg is not None, "features": sorted(run.features)},
        dirs={st: ws.stage_dir(st) for st in LINEAGE},
    )


def _from_rank0(value: Any) -> Any:
    """Rank 0's value on every rank (as it is without torchrun)."""
    if _dist()[1] == 1:
        return value
    obj = [value]
    dist.broadcast_object_list(obj, 0)
    return obj[0]


def _check_finite(
    user: np.ndarray, item: np.ndarray, history: list[dict[str, Any]]
) -> None:
    """Stop (keeping the old model) when training diverged: a NaN model must never replace a good one."""
    if not (np.isfinite(user).all() and np.isfinite(item).all()):
        raise InputError(
            f"training diverged: the embeddings hold NaN or infinite values after epoch "
            f"{history[-1]['epoch'] if history else 0} (lower --lr, or check --reg and the weights); "
            "model/ is unchanged"
        )


@torch.no_grad()
def _embeddings(model: GraphRec, inp: GraphInputs) -> tuple[np.ndarray, np.ndarray]:
    """Every user's and item's exported embedding (cold items from their content path)."""
    model.eval()
    user, item = model.get_embedding(inp).export(inp.item_degree > 0)
    return user.cpu().numpy(), item.cpu().numpy()


def _model_meta(
    run: _Run,
    model: GraphRec,
    inp: GraphInputs,
    selected: int,
    validation: dict[str, float],
    refit: bool,
    fitted_interactions: int,
) -> artifacts.ModelRecord:
    feats = {
        m: artifacts.FeatureUse(f.dim, bool(f.meta.get("random_weights", False)))
        for m, f in run.features.items()
    }
    return artifacts.ModelRecord(
        scoring="dot",
        dim=run.s.dim + 1,
        embedding_dim=run.s.dim,
        note="last column: user 1, item content-predicted popularity bias",
        settings=run.s.result_settings(),
        selected_epoch=selected,
        refit=refit,
        validation=validation,
        mode=run.ds.mode,
        fitted_interactions=fitted_interactions,
        warm_items=int((inp.item_degree > 0).sum()),
        features=feats,
        architecture=artifacts.Architecture(**model.config()),
    )


# -- growing without retraining (graphrec.stages.update) ---------------------------------------------
def updated_embeddings(
    trained: TrainedModel,
    grown: Dataset,
    kg: KnowledgeGraph | None,
    features: dict[str, Features],
    trained_rows: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Exported (user, item) of the trained parameters over a grown dataset whose first `trained_rows`
    interaction rows are those the parameters were made with: of those, the parts the served model was fitted on
    (train+valid when it was refit, train otherwise) keep their ID embeddings; cold-user context and every row
    added since are propagated over without one (`refresh_embeddings`)."""
    inter = grown.interactions
    rows = np.arange(len(inter))
    fitted_parts = TRAINED if trained.meta.refit else ("train",)
    is_trained = (rows < trained_rows) & inter["split"].isin(fitted_parts).to_numpy()
    is_extra = (
        (rows < trained_rows) & (inter["split"] == "cold_user_context").to_numpy()
    ) | (rows >= trained_rows)
    users, items = inter["user"].to_numpy(np.int64), inter["item"].to_numpy(np.int64)
    extra = (users[is_extra], items[is_extra]) if is_extra.any() else None
    return refresh_embeddings(
        trained.model,
        grown,
        kg,
        features,
        (users[is_trained], items[is_trained]),
        extra,
    )


@torch.no_grad()
def refresh_embeddings(
    model: GraphRec,
    ds: Dataset,
    kg: KnowledgeGraph | None,
    features: dict[str, Features],
    trained: tuple[np.ndarray, np.ndarray],
    extra: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exported (user [U, d+1], item [I, d+1]) of the trained parameters over the extended dataset and graph.

    `trained`: the (user, item) pairs the parameters were trained on (they decide which nodes have an ID
    embedding and which items are warm); `extra`: pairs propagated over without ID embeddings. Rows the
    parameters lack (new users, items, attribute values) start at zero, so with no new data this returns
    exactly what the train stage exported."""
    cfg = model.config()
    types = {
        t: int(kg.num_nodes.get(t, n)) if kg is not None else n
        for t, n in cfg["node_types"].items()
    }
    grown = GraphRec(
        ds.n_users, ds.n_items, cfg["dim"], cfg["layers"], cfg["modality_dims"], types
    )
    grown.load_state_dict(_grown_state(model, grown))
    grown.eval()
    inp = build_inputs(
        ds.n_users, ds.n_items, trained[0], trained[1], kg, features, extra=extra
    )
    user, item = grown.get_embedding(inp).export(inp.item_degree > 0)
    return user.numpy(), item.numpy()


def _grown_state(model: GraphRec, grown: GraphRec) -> dict[str, torch.Tensor]:
    """`model`'s parameters shaped for `grown`: ID and attribute tables keep their trained rows first, and the
    rows `grown` adds start at zero."""
    state = {}
    for name, v in model.state_dict().items():
        target = grown.state_dict()[name]
        if target.shape != v.shape:
            new_rows = torch.zeros(
                target.shape[0] - v.shape[0], *v.shape[1:], dtype=v.dtype
            )
            v = torch.cat([v, new_rows])
        state[name] = v
    return state
