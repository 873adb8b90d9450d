"""ReID dataset building, sampling, training, evaluation and metrics."""
