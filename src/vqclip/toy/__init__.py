"""The toy world: a procedural captioned world, a VQGAN + CLIP pair trained on it, and a judge.

`world` draws the images and captions, `judge` scores images, `models` loads the shipped
files, and `eval` (the `vqclip eval` command) is the benchmark. See docs/toy.md; the training
recipe lives in research/ in a source checkout.
"""
