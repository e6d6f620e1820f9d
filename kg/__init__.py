"""The knowledge graph, installed as graphrec.kg.

Schema, vectorised builders, triples, statistics, explanation paths, conversions.
"""

from graphrec.kg.build import BuildResult, build_graph, run_build
from graphrec.kg.explain import Explainer, ExplanationPath, explain_pair
from graphrec.kg.graph import EdgeSet, KnowledgeGraph
from graphrec.kg.stats import graph_stats, leak_check, run_stats

__all__ = [
    "BuildResult",
    "EdgeSet",
    "ExplanationPath",
    "Explainer",
    "KnowledgeGraph",
    "build_graph",
    "explain_pair",
    "graph_stats",
    "leak_check",
    "run_build",
    "run_stats",
]
