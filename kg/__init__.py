"""The knowledge graph: schema, vectorised builders, triples, statistics, explanation paths, conversions."""
from kg.build import BuildResult, build_graph, run_build
from kg.explain import ExplanationPath, Explainer, explain_pair
from kg.graph import EdgeSet, KnowledgeGraph
from kg.stats import graph_stats, leak_check, run_stats

__all__ = ["BuildResult", "EdgeSet", "ExplanationPath", "Explainer", "KnowledgeGraph", "build_graph", "explain_pair",
           "graph_stats", "leak_check", "run_build", "run_stats"]
