"""Placeholder: being written."""


def apgd(*args, **kwargs):
    raise NotImplementedError("apgd is not written yet")
