"""Models of the book: the open_clip wrapper and the pieces trained around it.

- :mod:`duet_lib.models.clip`: load and save CLIP backbones (the tiny conv-stem
  configs and open_clip's own), preprocessing, patch tokens, freezing.
- :mod:`duet_lib.models.text_encoding`: pseudo-word tokens through the frozen text
  encoder.
"""
