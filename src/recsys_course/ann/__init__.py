"""Approximate nearest-neighbour helpers of lesson 07: Annoy's parameter sweep (``sweep``)
and the comparison of Annoy with exact and HNSW search (``compare``)."""
