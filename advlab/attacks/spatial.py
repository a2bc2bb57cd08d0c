"""Placeholder: being written."""


def spatial(*args, **kwargs):
    raise NotImplementedError("spatial is not written yet")
