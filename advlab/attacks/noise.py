"""Placeholder: being written."""


def random_noise(*args, **kwargs):
    raise NotImplementedError("random_noise is not written yet")


def minimal_noise_norm(*args, **kwargs):
    raise NotImplementedError("minimal_noise_norm is not written yet")
