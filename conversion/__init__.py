"""Conversion of original Caduceus checkpoints to native caduceus-hf directories, and publishing to the Hub.

Installed as `caduceus_hf.conversion` (this folder is mapped there by setup.cfg); use it through
`caduceus-hf convert` and `caduceus-hf push`.
"""
