"""Analyses of trained weights after training (post hoc): they read a study folder's kept checkpoints."""
