"""8.1: a tf.function without an input signature: it works in memory but cannot be exported
as a serving signature."""


def make_retrieval_servable(user_model, movie_ids, movie_embeddings, k=10):
    k = int(min(k, len(movie_ids)))
    index = tfrs.layers.factorized_top_k.BruteForce(user_model, k=k)
    index.index(
        tf.constant(np.asarray(movie_embeddings, dtype=np.float32)),
        tf.constant(np.asarray(movie_ids).astype(str)),
    )
    module = tf.Module()
    module.index = index

    @tf.function
    def serve(user_id):
        scores, ids = module.index(user_id, k=k)
        return {"movie_ids": ids, "scores": scores}

    module.serve = serve
    return module
