"""``mini``: the pack's own small IF-compatible model, so that Part A runs offline on any laptop.

``world``     the digit world it is trained on (digits in styles, with prompts that name them)
``model``     its text encoder, recipe, training and shipped weights (``python -m diffnb.mini.model``)
``judge``     a classifier that reads a digit and a style from a sample

How well Part A's methods work on it, read by the judge: ``diffnb.evaluate``.
"""
