from keras import ops


def global_pool(x, mode):
    """Parameter-free global pooling of a (batch, h, w, c) map: "avg", "max" or "avgmax"."""
    if mode == "avg":
        return ops.mean(x, axis=(1, 2))
    if mode == "max":
        return ops.max(x, axis=(1, 2))
    if mode == "avgmax":
        return ops.concatenate([ops.mean(x, axis=(1, 2)), ops.max(x, axis=(1, 2))], axis=-1)
    raise ValueError(f"No parameter-free global pooling named {mode!r}. Received: mode={mode!r}")
