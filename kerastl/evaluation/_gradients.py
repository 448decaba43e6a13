"""The one backend shim of `kerastl.evaluation`: a gradient, on whichever backend runs."""

import keras
import numpy as np


def value_and_gradient(fn, x):
    """`(fn(x), d sum(fn(x)) / dx)` as numpy arrays.

    `fn` maps a float32 backend tensor `x` to per-example scores `(batch,)`;
    `fn` must treat the examples independently, so the gradient of the sum is
    each example's own gradient.
    """
    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            scores = fn(x)
            total = tf.reduce_sum(scores)
        gradient = tape.gradient(total, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    elif backend == "jax":
        import jax

        def total_and_scores(x):
            scores = fn(x)
            return jax.numpy.sum(scores), scores

        (_, scores), gradient = jax.value_and_grad(total_and_scores, has_aux=True)(x)
    elif backend == "torch":
        import torch

        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            scores = fn(x)
            (gradient,) = torch.autograd.grad(scores.sum(), x)
        scores = scores.detach()
    else:
        raise NotImplementedError(
            f"Gradients are not implemented for the {keras.config.backend()!r} backend: "
            "use tensorflow, jax or torch."
        )
    return np.asarray(keras.ops.convert_to_numpy(scores)), np.asarray(
        keras.ops.convert_to_numpy(gradient)
    )
