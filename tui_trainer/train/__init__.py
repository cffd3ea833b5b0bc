"""The training loop and its parts: ``engine`` (the loop), ``step``, ``model``,
``data``, ``optim``, ``schedule``, ``presets``, ``hardware``, ``memory``, ``threads``,
``distributed`` and the lesson's functions (``lesson``)."""
