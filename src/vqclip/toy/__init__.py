"""The toy world: a procedural captioned world, a VQGAN + CLIP pair trained on it, and a judge.

`world` draws the images and captions, `judge` scores images, `train` (run as
`python -m vqclip.toy.train`) trains everything into `weights/`, `models` loads the shipped
files, and `eval` (`python -m vqclip.toy.eval`) is the benchmark. See docs/toy.md.
"""
