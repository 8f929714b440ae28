"""Datasets in the raw multimodal format: synthetic scenes, DELIVER, and consistent augmentations."""
