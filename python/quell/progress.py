"""Progress of the native studies: tqdm when it is installed, a line on stderr otherwise."""
import sys
import time


class _Plain:
    """The CLI's plain progress: a line on stderr every 10%."""

    def __init__(self, label):
        self.label, self.last, self.start = label, -1, time.monotonic()

    def __call__(self, done, total, what, loss, accuracy):
        frac = done / total if total > 0 else 1.0
        pct = int(frac * 10) * 10
        if pct == self.last and done < total:
            return
        self.last = pct
        elapsed = time.monotonic() - self.start
        loss_text = f"loss {loss:.4f} " if loss else ""
        sys.stderr.write(f"{self.label} {what} {pct:3d}% {loss_text}acc {accuracy:.4f} "
                         f"elapsed {elapsed:.0f}s\n")
        sys.stderr.flush()


class _Tqdm:
    def __init__(self, label, tqdm):
        self.label, self.tqdm, self.bar = label, tqdm, None

    def __call__(self, done, total, what, loss, accuracy):
        if self.bar is None:
            self.bar = self.tqdm(total=total, desc=self.label, leave=False, file=sys.stderr)
        self.bar.total = total
        self.bar.n = done
        self.bar.set_postfix_str((f"loss {loss:.4f} " if loss else "") + f"acc {accuracy:.4f}",
                                 refresh=False)
        self.bar.refresh()
        # Not closed at done == total: a search's total grows as it goes (the bar closes when
        # the engine lets go of the callback).

    def __del__(self):
        if self.bar is not None:
            self.bar.close()


def _silent(done, total, what, loss, accuracy):
    """No output; the call still lets Ctrl-C interrupt the study."""


def factory(progress):
    """The native monitor's progress factory for `progress`: True (tqdm or plain lines), False
    (silent), or a callable(label) -> callable(done, total, what, loss, accuracy)."""
    if progress is False or progress is None:
        return lambda label: _silent
    if progress is True:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            return lambda label: _Tqdm(label, tqdm)
        return _Plain
    if callable(progress):
        return progress
    raise TypeError(f"progress must be True, False or a callable, got {type(progress).__name__}")
