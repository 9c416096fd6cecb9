"""Examples to copy from: a scorer to register in ``[[scorers]]`` (see ``scorers.py``)."""
