"""The error raised when a dataset cannot be read."""


class DataUnavailableError(RuntimeError):
  """A dataset is missing, unreadable or not prepared.

  The message names the dataset, the place it was looked for and the command or flag that fixes
  it, so the command line can print it as it is, without a traceback.
  """
