"""Embedded toy model (issue 3): the shapes world, its word-level tokenizer, training and evaluation.

- ``world``: seeded scene and question generator (the data, documented there).
- ``tokenizer``: word-level tokenizer + ``LlavaProcessor`` (576 image tokens per image).
- ``model``: toy ``LlavaForConditionalGeneration`` config, dense per-patch targets, 12x12 -> 24x24 conversion.
- ``train`` / ``evaluate``: ``python -m explorer.toy.train`` and ``python -m explorer.toy.evaluate``.

The released checkpoint lives in ``assets/toy-llava`` (``explorer.model_ref.EMBEDDED_MODEL``) and loads with
stock Auto classes.
"""
