"""Prototypical Networks (Snell, Swersky & Zemel 2017, arXiv:1703.05175).

Class prototypes are the mean support embeddings per class; a query is classified by the
softmax over negative squared Euclidean distances to the prototypes. Trained end to end
with a Keras 3 optimizer on batches of episodes.

Protocol notes: support and query images of all tasks in the batch go through the
encoder in one call (as in the reference implementation, which embeds support and query
together). With a `MetaNorm("batch")` encoder the normalisation statistics are therefore
those of the whole meta-batch of episodes, at training and at evaluation alike
(transductive); use norm="instance"/"layer" for per-image statistics.
"""

import tensorflow as tf

from tfmeta.errors import ConfigError

__all__ = ["ProtoNet", "prototypes", "prototype_logits", "refined_prototypes"]


def _class_sums(embeddings, labels, n_way):
    """(sum of embeddings `[B, n_way, D]`, count `[B, n_way, 1]`) per class."""
    one_hot = tf.one_hot(tf.cast(labels, tf.int32), n_way, dtype=embeddings.dtype)
    return (tf.einsum("bmn,bmd->bnd", one_hot, embeddings),
            tf.reduce_sum(one_hot, axis=1)[..., None])


def prototypes(embeddings, labels, n_way):
    """Mean embedding per class.

    embeddings: `[B, M, D]` float; labels: int `[B, M]` in 0..n_way-1.
    Returns `[B, n_way, D]` (a class with no support example gets a zero prototype).
    """
    sums, counts = _class_sums(embeddings, labels, n_way)
    return sums / tf.maximum(counts, 1)


def refined_prototypes(support_embeddings, support_labels, query_embeddings, n_way, steps):
    """Prototypes refined with the unlabelled query embeddings by `steps` soft k-means
    steps (Ren et al. 2018, "Meta-Learning for Semi-Supervised Few-Shot Classification",
    arXiv:1803.00676, eq. 3-4): every query joins every class with the weight of its
    softmax over negative squared distances to the current prototypes; the support
    embeddings keep their labels (weight 1). Transductive: a query's class depends on the
    other queries of its task. steps = 0 gives `prototypes`.

    support `[B, M, D]` with labels `[B, M]`, query `[B, Q, D]` -> `[B, n_way, D]`.
    """
    sums, counts = _class_sums(support_embeddings, support_labels, n_way)
    protos = sums / tf.maximum(counts, 1)
    for _ in range(int(steps)):
        weights = tf.nn.softmax(prototype_logits(query_embeddings, protos), axis=-1)
        protos = tf.math.divide_no_nan(
            sums + tf.einsum("bqn,bqd->bnd", weights, query_embeddings),
            counts + tf.reduce_sum(weights, axis=1)[..., None])
    return protos


def prototype_logits(query_embeddings, protos):
    """-||q - p||^2: query `[B, Q, D]`, prototypes `[B, N, D]` -> logits `[B, Q, N]`."""
    # Expanded form avoids materialising [B, Q, N, D]; clamp tiny negative round-off.
    sq_q = tf.reduce_sum(tf.square(query_embeddings), axis=-1)[..., None]
    sq_p = tf.reduce_sum(tf.square(protos), axis=-1)[:, None, :]
    cross = tf.einsum("bqd,bnd->bqn", query_embeddings, protos)
    return -tf.maximum(sq_q + sq_p - 2.0 * cross, 0.0)


class ProtoNet:
    """Prototypical Network over a Keras encoder `images [N, H, W, C] -> [N, D]`.

    meta_step(support, query, step): support = (images [B, N*K, H, W, C], labels [B, N*K]),
      query likewise with [B, N*Q]; one optimizer step on the mean query cross-entropy.
      Returns {"query_loss", "query_accuracy", "grad_norm"} float32 scalars. Compiled once.
    adapt_and_evaluate(support, query, step, num_steps=None): {"query_loss",
      "query_accuracy"}; "adaptation" is computing the prototypes; num_steps (None or 0:
      none) soft k-means refinement steps of the prototypes with the query images
      (`refined_prototypes`, transductive; step is unused: the common learner
      signature, tfmeta.meta.MetaLearner). A training=False call of the encoder;
      MetaNorm has no running statistics, so this equals training-mode statistics.
    """

    update_rule_variables = ()   # no inner loop, nothing learned about one

    def __init__(self, encoder, n_way, optimizer):
        if n_way < 2:
            raise ConfigError(f"ProtoNet n_way must be >= 2, got {n_way}")
        if optimizer is None:
            raise ConfigError("ProtoNet needs an optimizer (a Keras 3 optimizer)")
        self.encoder = encoder
        self.n_way = int(n_way)
        self.optimizer = optimizer
        optimizer.build(encoder.trainable_variables)
        self.compiled_meta_step = tf.function(self._meta_step_graph, reduce_retracing=True)
        self.compiled_evaluate = tf.function(self._evaluate_graph, reduce_retracing=True)

    def trackables(self):
        """Objects to put in `tf.train.Checkpoint(**protonet.trackables())`."""
        return {"encoder": self.encoder, "optimizer": self.optimizer}

    def _loss(self, support, query, training, refine_steps=0):
        support_images, support_labels = support
        query_images, query_labels = query
        shape = tf.shape(support_images)
        tasks, num_support = shape[0], shape[1]
        num_query = tf.shape(query_images)[1]
        flat = tf.concat([
            tf.reshape(support_images, tf.concat([[-1], shape[2:]], 0)),
            tf.reshape(query_images, tf.concat([[-1], tf.shape(query_images)[2:]], 0))], 0)
        embeddings = self.encoder(flat, training=training)
        dim = tf.shape(embeddings)[-1]
        split = tasks * num_support
        support_emb = tf.reshape(embeddings[:split], [tasks, num_support, dim])
        query_emb = tf.reshape(embeddings[split:], [tasks, num_query, dim])
        # The number of classes comes from the episode, so one encoder trained on
        # many-way episodes (as Snell et al. do) is evaluated on 5-way ones.
        n_way = tf.reduce_max(tf.cast(support_labels, tf.int32)) + 1
        logits = prototype_logits(query_emb, refined_prototypes(
            support_emb, support_labels, query_emb, n_way, refine_steps))
        labels = tf.cast(query_labels, tf.int32)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels)
        return loss, tf.reduce_mean(tf.cast(correct, tf.float32))

    def meta_step(self, support, query, step):
        """One optimizer step on a batch of episodes; returns float32 scalar metrics."""
        return self.compiled_meta_step(support, query, tf.cast(step, tf.int64))

    def adapt_and_evaluate(self, support, query, step=0, num_steps=None):
        """Query loss and accuracy of a batch of episodes (mean over tasks and queries);
        num_steps: soft k-means refinement steps with the queries (None: 0)."""
        del step   # deterministic
        refine_steps = int(num_steps or 0)
        if refine_steps < 0:
            raise ConfigError(f"ProtoNet refinement steps must be >= 0, got {refine_steps}")
        return self.compiled_evaluate(support, query, refine_steps)

    def inner_rule(self):
        """None: a ProtoNet adapts by computing prototypes, with no inner update rule."""
        return None

    def _meta_step_graph(self, support, query, step):
        del step  # deterministic; kept for the common learner signature
        variables = self.encoder.trainable_variables
        with tf.GradientTape() as tape:
            loss, accuracy = self._loss(support, query, training=True)
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return {"query_loss": tf.cast(loss, tf.float32), "query_accuracy": accuracy,
                "grad_norm": tf.cast(tf.linalg.global_norm(grads), tf.float32)}

    def _evaluate_graph(self, support, query, refine_steps):
        # refine_steps is a Python int: one trace per value (a run uses one or two).
        loss, accuracy = self._loss(support, query, training=False,
                                    refine_steps=refine_steps)
        return {"query_loss": tf.cast(loss, tf.float32), "query_accuracy": accuracy}
