"""Training: synthetic labelled corpora and adapter training for the MusiLingo model."""
