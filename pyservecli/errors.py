"""The one exception type pyserve raises for problems the user can fix."""


class PyserveError(Exception):
    """A clear, one-line problem with the user's input or environment.

    The CLI prints ``pyserve: error: <message>`` and exits with status 2; nothing has been
    launched when it is raised before a launch.
    """
