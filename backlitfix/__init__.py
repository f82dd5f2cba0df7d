"""backlitfix: fix backlit photos with the CLIP-LIT / RAVE enhancement network."""
__version__ = "0.1.0"
