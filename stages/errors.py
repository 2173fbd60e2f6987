"""The one exception type for errors a user can cause (bad params, missing files, bad images)."""


class PipelineError(Exception):
    """A problem with the user's input: the message names the thing and says what to do."""
