"""Text into tokens and back: ``tokenizer`` (the ``--tokenizer`` setting), ``corpora``
(folders, globs, jsonl, parquet), ``token_cache``, nanoGPT's files (``nanogpt``) and
validation ``bits_per_byte``."""
