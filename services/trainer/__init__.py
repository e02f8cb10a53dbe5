"""The trainer service: PyTorch training, scikit-learn evaluation, model export and prediction."""
