"""Training of demo weights on synthetic scenes (needs torch)."""
