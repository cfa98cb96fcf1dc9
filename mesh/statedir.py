"""Where a broker keeps what outlives it by default: checkpoints under the user's
state directory (XDG Base Directory: $XDG_STATE_HOME, else ~/.local/state), or,
for a user with no home, a folder in the working directory. Never the temp dir:
what is there is shared with every user and swept away."""
import os

from . import settings


def checkpoint_dir(env=None):
    state = settings.state_home(env)
    if state and os.path.isabs(state):  # the spec: a relative path is to be ignored
        return os.path.join(state, "neuromesh", "checkpoints")
    home = settings.home(env)
    if home and home != "/" and os.path.isabs(home) and os.path.isdir(home) and os.access(home, os.W_OK):
        return os.path.join(home, ".local", "state", "neuromesh", "checkpoints")
    return os.path.join(os.getcwd(), "neuromesh-checkpoints")
