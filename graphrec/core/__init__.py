"""Layer 1, core: what every layer uses, with nothing of graphrec's below it.

One-line input errors (`errors`), checked tensor and table files and atomic writes (`io`), typed
JSON records (`records`), the workspace and its stage folders (`workspace`), the encoded feature
files (`feature_store`), the stages' settings and their defaults (`settings`), the device, progress
bars and memory estimates.
"""
