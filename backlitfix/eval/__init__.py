"""Measuring quality: full- and no-reference metrics (``backlitfix eval``) and the before/after report."""
