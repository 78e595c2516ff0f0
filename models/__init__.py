"""R2-Tuning inference engine: pure PyTorch, tensors in and tensors out."""
