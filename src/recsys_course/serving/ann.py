"""An Annoy index of movie vectors that lives *beside* the served query tower.

Annoy is a C++ library, not a TensorFlow op, so it cannot go inside a SavedModel that stock
TF Serving loads. The application keeps the index in its own process: it asks the served
query tower for the user's vector, queries Annoy for candidate movies, then asks the served
ranking model to order them. The index and the query tower must come from the same training
run (the same embedding space), so the index is stored in a folder named by the tower's
version and the application asks the server for that exact version.

Two-tower models score by dot product, and Annoy's ``dot`` metric is known to lose recall
(spotify/annoy issue 619). The index therefore uses the classic reduction from maximum inner
product search to angular search (Bachrach et al., RecSys 2014): append to every movie vector
``x`` one coordinate ``sqrt(M**2 - |x|**2)``, where ``M`` is the largest movie norm, and a
``0`` to the query. All movie vectors then share the norm ``M`` and the query's angle to a
movie orders movies exactly as the dot product does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

INDEX_FILE, IDS_FILE = "movies.ann", "movie_ids.json"


class AnnoyCandidates:
    """Approximate top-n movies by dot product with a query vector.

    Args:
        movie_ids: ``[n]`` ids; row ``i`` of ``embeddings`` belongs to ``movie_ids[i]``.
        embeddings: ``float32 [n, dim]`` movie vectors.
        n_trees: more trees, better recall, bigger index and slower build.
        seed: Annoy's random seed, so rebuilding gives the same index.
    """

    def __init__(self, movie_ids, embeddings, *, n_trees: int = 20, seed: int = 42) -> None:
        from annoy import AnnoyIndex

        vectors = np.asarray(embeddings, dtype=np.float32)
        self.movie_ids = [str(m) for m in movie_ids]
        if vectors.ndim != 2 or len(vectors) != len(self.movie_ids):
            raise ValueError(f"embeddings must be [{len(self.movie_ids)}, dim], got {vectors.shape}")
        self.dim = int(vectors.shape[1])
        norms = np.linalg.norm(vectors, axis=1)
        extra = np.sqrt(np.maximum(norms.max() ** 2 - norms**2, 0.0))
        self.index = AnnoyIndex(self.dim + 1, "angular")
        self.index.set_seed(seed)
        for i, row in enumerate(np.hstack([vectors, extra[:, None]])):
            self.index.add_item(i, row.tolist())
        self.index.build(n_trees, n_jobs=1)

    def query(self, vector, n: int, *, search_k: int = -1) -> list[str]:
        """The ``n`` movie ids with the (approximately) highest dot product with ``vector``
        (``float [dim]``), best first."""
        query = np.append(np.asarray(vector, dtype=np.float32).reshape(-1), 0.0)
        if query.shape[0] != self.dim + 1:
            raise ValueError(f"query vector must have {self.dim} numbers, got {query.shape[0] - 1}")
        rows = self.index.get_nns_by_vector(query.tolist(), n, search_k=search_k)
        return [self.movie_ids[i] for i in rows]

    def save(self, folder: str | Path) -> Path:
        """Write ``movies.ann`` and ``movie_ids.json`` into ``folder``; return it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.index.save(str(folder / INDEX_FILE))
        (folder / IDS_FILE).write_text(
            json.dumps({"dim": self.dim, "movie_ids": self.movie_ids}), encoding="utf-8"
        )
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> AnnoyCandidates:
        """Memory-map an index written by :meth:`save` (fast: nothing is rebuilt)."""
        from annoy import AnnoyIndex

        folder = Path(folder)
        meta = json.loads((folder / IDS_FILE).read_text(encoding="utf-8"))
        self = cls.__new__(cls)
        self.movie_ids, self.dim = meta["movie_ids"], int(meta["dim"])
        self.index = AnnoyIndex(self.dim + 1, "angular")
        self.index.load(str(folder / INDEX_FILE))
        return self
