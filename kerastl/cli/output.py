"""What the command prints: text for people, or one JSON document for scripts."""

import sys


class UsageError(Exception):
    """A bad argument found after parsing: exit code 2."""


class Output:
    """`say` prints for people (nothing under `--json`); `verbose` is Keras' progress level."""

    def __init__(self, as_json):
        self.as_json = bool(as_json)

    @property
    def verbose(self):
        # Keras' progress bars write to stdout, which --json keeps for the document.
        return 0 if self.as_json else 2 if not sys.stdout.isatty() else 1

    def say(self, text=""):
        if not self.as_json:
            print(text, flush=True)

    def table(self, rows, header):
        """Rows of values as aligned text columns."""
        cells = [[str(v) for v in row] for row in rows]
        widths = [
            max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
            for i, h in enumerate(header)
        ]
        self.say("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
        for row in cells:
            self.say("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
