"""Placeholder: being written."""


def deepfool(*args, **kwargs):
    raise NotImplementedError("deepfool is not written yet")
