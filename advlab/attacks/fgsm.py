"""Placeholder: being written."""


def fgsm(*args, **kwargs):
    raise NotImplementedError("fgsm is not written yet")


def fgm(*args, **kwargs):
    raise NotImplementedError("fgm is not written yet")
