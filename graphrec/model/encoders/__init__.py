"""Content encoders for the encode stage.

CLIP (clip.py), sentence-transformers (sentence.py), lexical TF-IDF (lexical.py), precomputed files
(precomputed.py), safe image loading (images.py), mixed precision (runtime.py).
"""
