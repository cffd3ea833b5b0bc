"""Other people's training loops under the same dashboard, one module each
(``huggingface``: ``transformers.Trainer``).  Each needs its own optional
extra; nothing here is imported by the core."""
