"""Inference stage: the predictor, backends, tiling, outputs and pre-annotations, evaluation."""
