"""Training pipeline: data, fine-tuning, evaluation, FCN conversion, unit ranking, bundle writing."""
