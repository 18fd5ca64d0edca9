class DeployError(Exception):
    """A failure the user can act on; the CLI prints it as one message, never a traceback."""


class RolloutFailed(DeployError):
    """A new spec did not become ready (the controller's words and pod events in the text)."""


class GateFailed(DeployError):
    """A canary step's gate failed during the bake (metrics out of bounds or unreadable)."""
