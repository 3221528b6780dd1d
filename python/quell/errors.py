"""How quell reports bad input to Python: the built-in exception types, one-line messages."""


class QuellError(RuntimeError):
    """A failure inside the native engine that is not a bad argument (e.g. a file that cannot be
    written). Bad arguments raise ValueError, TypeError or FileNotFoundError."""


def check_file(path, what="file"):
    """Raises FileNotFoundError naming `path` if it does not exist."""
    import os
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} {path}: no such file")
    return str(path)
