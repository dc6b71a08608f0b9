"""Modules built on mcmri_fast.ops, reused by the models."""
