"""8.1: indexes the embeddings without their ids, so the servable returns row numbers."""


def make_retrieval_servable(user_model, movie_ids, movie_embeddings, k=10):
    k = int(min(k, len(movie_ids)))
    index = tfrs.layers.factorized_top_k.BruteForce(user_model, k=k)
    index.index(tf.constant(np.asarray(movie_embeddings, dtype=np.float32)))
    module = tf.Module()
    module.index = index

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
    def serve(user_id):
        scores, ids = module.index(user_id, k=k)
        return {"movie_ids": ids, "scores": scores}

    module.serve = serve
    return module
