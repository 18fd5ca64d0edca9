class DeployError(Exception):
    """A failure the user can act on; the CLI prints it as one message, never a traceback."""


class RolloutFailed(DeployError):
    """A new revision did not become ready (condition message and pod events in the text)."""


class GateFailed(DeployError):
    """A canary step's metrics were outside their thresholds."""
