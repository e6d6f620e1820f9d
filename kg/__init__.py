"""The knowledge graph: schema, vectorised builders, triples, statistics, explanation paths, conversions."""
from kg.graph import EdgeSet, KnowledgeGraph

__all__ = ["EdgeSet", "KnowledgeGraph"]
