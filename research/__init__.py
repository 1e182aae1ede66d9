"""Research code of a source checkout, not installed with vqclip: see research/README.md."""
