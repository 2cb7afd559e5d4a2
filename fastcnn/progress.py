"""The training progress display of ``Sequential.fit``.

On a terminal (verbose=1), a live bar per epoch: batches done, running loss,
images/s and time left, redrawn at most 10 times a second, then replaced by
the epoch's summary line. Elsewhere (a log file, a pipe, pytest's capture) or
with verbose=2, only the summary line of each epoch. Nothing with verbose=0.
"""
import sys
import time

_REDRAW_SECONDS = 0.1
_BAR_WIDTH = 24


def _duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def format_logs(logs):
    """``loss: 0.1234 - accuracy: 0.9650 - ...`` from a dict of epoch figures."""
    parts = []
    for key, value in logs.items():
        if key == "images_per_sec":
            parts.append(f"{value:,.0f} img/s")
        elif key.endswith("accuracy"):
            parts.append(f"{key}: {value:.4f}")
        else:
            parts.append(f"{key}: {value:.4g}")
    return " - ".join(parts)


class Progress:
    """Reports the progress of one ``fit`` call.

    Args:
        epochs: number of epochs.
        steps: batches per epoch.
        verbose: 0 (silent), 1 (live bar on a terminal, else a line per
            epoch) or 2 (a line per epoch).
        stream: where to write (default: ``sys.stdout`` at construction).
    """

    def __init__(self, epochs, steps, verbose=1, stream=None):
        self.epochs, self.steps, self.verbose = epochs, steps, verbose
        self.stream = sys.stdout if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.live = verbose == 1 and bool(isatty and isatty())
        self._epoch = 0
        self._start = self._last_draw = 0.0
        self._drawn = False

    def start_epoch(self, epoch):
        self._epoch = epoch
        self._start = time.perf_counter()
        self._last_draw = 0.0

    def update(self, step, images, loss):
        """After batch ``step`` (1-based): ``images`` seen this epoch, running mean ``loss``."""
        if not self.live:
            return
        now = time.perf_counter()
        if step < self.steps and now - self._last_draw < _REDRAW_SECONDS:
            return
        self._last_draw = now
        elapsed = max(now - self._start, 1e-9)
        done = int(_BAR_WIDTH * step / self.steps)
        bar = "=" * done + (">" if done < _BAR_WIDTH else "") + " " * (_BAR_WIDTH - done - 1)
        left = elapsed * (self.steps - step) / step
        width = len(str(self.steps))
        self._write(f"\rEpoch {self._epoch}/{self.epochs} [{bar}] {step:{width}d}/{self.steps}"
                    f" - loss: {loss:.4f} - {images / elapsed:,.0f} img/s"
                    f" - ETA {_duration(left)}\033[K")
        self._drawn = True

    def end_epoch(self, seconds, logs):
        """The epoch's summary line (replacing the live bar)."""
        if self.verbose == 0:
            return
        line = (f"Epoch {self._epoch}/{self.epochs} - {self.steps} batches - "
                f"{seconds:.1f}s - {format_logs(logs)}")
        if self._drawn:
            line = "\r" + line + "\033[K"
        self._write(line + "\n")
        self._drawn = False

    def close(self):
        """End a live line left open (e.g. when training stops with an error)."""
        if self._drawn:
            self._write("\n")
            self._drawn = False

    def _write(self, text):
        self.stream.write(text)
        self.stream.flush()
