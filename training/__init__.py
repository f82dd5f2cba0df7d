"""Training the enhancer: CLIP loading, the guidance methods (RAVE, CLIP-LIT, CLIP-LIT-Latent), the trainer,
personal-style residuals and their explanation, and the recipe of the embedded default model.

Needs the ``train`` extra (open_clip_torch); the inference package ``backlitfix`` never imports this one
at start-up.
"""
