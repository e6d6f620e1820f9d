"""Layer 4, model: the maths, above data (graphrec.data) and the knowledge graph (graphrec.kg).

The GNN (`gnn`) and its sparse propagation, the closed-form filters and content maps
(`closed_form`), the content encoders (`encoders`), metrics, the approximate index (`ann`), and the
formats of the model/ folder (`artifacts`) and of an export (`export_format`). Nothing here reads a
workspace's stages in order; the stages do.
"""
