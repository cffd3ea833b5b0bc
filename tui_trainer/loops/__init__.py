"""A training loop of your own under the same run folder, log and dashboard:
``tui_trainer.init`` (``api``), ``own_loop``, ``tui-trainer run`` (``launch``) and the
Hugging Face callback (``huggingface``)."""
