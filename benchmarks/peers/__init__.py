"""Peer recommenders, one module per family, and graphrec itself; `SYSTEMS` maps name -> factory."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.peers.base import System


def _registry() -> dict[str, Callable[[], System]]:
    from benchmarks.peers import (
        content,
        graphrec_system,
        implicit_mf,
        lightfm_peer,
        lightgcn,
        linear,
        neighbours,
        popularity,
    )

    systems: dict[str, Callable[[], System]] = {
        "popularity": popularity.Popularity,
        "attr-popularity": popularity.AttributePopularity,
        "itemknn": neighbours.ItemKNN,
        "rp3beta": neighbours.RP3beta,
        "ease": linear.EASE,
        "edlae": linear.EDLAE,
        "als": implicit_mf.ALS,
        "bpr": implicit_mf.BPR,
        "lightfm": lightfm_peer.LightFMPure,
        "lightfm-hybrid": lightfm_peer.LightFMHybrid,
        "lightgcn": lightgcn.LightGCN,
        "content-knn": content.ContentKNN,
        "content-pop": content.ContentPopularity,
        "ridge-als": content.RidgeALS,
    }
    for name, ablation in graphrec_system.VARIANTS.items():
        systems[name] = lambda a=ablation, n=name: graphrec_system.Graphrec(n, a)
    return systems


SYSTEMS = _registry()
