"""The demo's errors: each says what is wrong and how to fix it; the CLI prints them."""


class DemoError(RuntimeError):
    """A problem the user can fix; the message says how."""


class DataError(DemoError, ValueError):
    """A dataset folder that cannot be used; the message names the file and line."""


class RecipeError(DemoError, ValueError):
    """A config or override the demo cannot use; the message names the key."""


class TrainingError(DemoError):
    """PaddleClas's training process failed; the message shows how to rerun it."""


class DemoInterrupted(DemoError):
    """Ctrl-C before any epoch completed: nothing to evaluate."""
